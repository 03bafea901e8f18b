"""The static encoder: a token-embedding table distilled from the bundled MiniLM (model2vec format).

An embedding is the mean of the rows of the text's word pieces (no special tokens, unknown pieces
dropped, at most ``max_length`` pieces), L2-normalised: what model2vec's ``StaticModel.encode``
computes, here with ``tokenizers`` and ``safetensors`` only (no torch, no hub).  The table ships in
``router/data/static-minilm-256`` (15 MB; ``scripts/distill_static_encoder.py`` remakes it).
Tokenizing is most of the cost, so the word pieces of each space-separated chunk are cached: about
0.2 ms a question on one core once the common words have been seen, thousands a second in batches.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from experts_registry.errors import ConfigError

from .vectors import check_texts, normalise

STATIC_DIR = Path(__file__).parent / "data" / "static-minilm-256"
CHUNKS = re.compile(r"[ \t\n\r]+")       # whitespace to BERT's pre-tokenizer (a subset of its split points)
CHUNK_CACHE = 200_000                     # chunks remembered (about 30 MB), then forgotten at once
SEQUENTIAL = 64                           # fewer new chunks than this: tokenized here, not on the tokenizer's
                                          # thread pool, whose idle threads slow the next request on 2 cores


class StaticEncoder:
    """Mean of distilled token vectors; deterministic, loaded on first use."""

    inline = True          # a fraction of a millisecond: a thread hop would cost more than the work

    def __init__(self, folder: str | Path | None = None, max_length: int | None = None,
                 threads: int | None = None):
        """``threads`` is accepted like MiniLM's and unused: encoding is one numpy gather and mean."""
        self.folder = Path(folder) if folder else STATIC_DIR
        self.name = "static-minilm-256" if folder is None else f"static:{self.folder.name}"
        self.max_length = max_length
        self._table: np.ndarray | None = None
        self._tokenizer = None
        self._unk: int | None = None
        self._limit: int | None = None
        self._chunks: dict[str, list[int]] = {}
        self.dim = 256 if folder is None else self._load()[0].shape[1]

    def _load(self):
        if self._table is None:
            try:
                from safetensors.numpy import load_file
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise ConfigError("the static encoder needs 'tokenizers' and 'safetensors': run "
                                  "'pip install conclave[embed]'", param="encoder") from exc
            if not (self.folder / "model.safetensors").is_file():
                raise ConfigError(f"no static embedding model in {self.folder}: reinstall Conclave "
                                  "(the files ship in router/data)", param="encoder")
            config = json.loads((self.folder / "config.json").read_text())
            tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            tokenizer.no_padding()
            limit = self.max_length or config.get("max_length")
            self._limit = int(limit) if limit else None
            tokenizer.no_truncation()                 # token_ids truncates the whole text
            self._table = load_file(str(self.folder / "model.safetensors"))["embeddings"].astype(np.float32)
            self._tokenizer = tokenizer
            self._unk = tokenizer.token_to_id("[UNK]")
        return self._table, self._tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        table, _ = self._load()
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        for row, ids in enumerate(self.token_ids(texts)):
            if ids:
                out[row] = table[ids].mean(axis=0)
        return normalise(out)

    def clear_cache(self) -> None:
        """Forget the chunks seen so far (benchmarks start each measurement from a known state)."""
        self._chunks.clear()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The word pieces of each text (unknown ones dropped), as the tokenizer gives them, from a
        cache of space-separated chunks.  Exact: the tokenizer's normaliser is per character and
        its pre-tokenizer splits at every space, tab and newline, so a text's pieces are its
        chunks' pieces in order (then truncated to ``max_length`` like the whole text would be)."""
        _, tokenizer = self._load()
        chunks = [CHUNKS.split(t) for t in texts]
        cache, have = self._chunks, {}
        for c in {c for cs in chunks for c in cs}:
            ids = cache.get(c)                        # get: another thread may clear the cache
            if ids is not None:
                have[c] = ids
        new = list({c for cs in chunks for c in cs if c not in have})
        if new:
            encoded = (tokenizer.encode_batch(new, add_special_tokens=False) if len(new) > SEQUENTIAL
                       else [tokenizer.encode(c, add_special_tokens=False) for c in new])
            if len(cache) + len(new) > CHUNK_CACHE:
                cache.clear()
            for chunk, enc in zip(new, encoded):
                have[chunk] = cache[chunk] = enc.ids
        out = []
        for cs in chunks:
            ids = [i for c in cs for i in have[c]]
            if self._limit is not None:
                ids = ids[:self._limit]
            out.append([i for i in ids if i != self._unk])
        return out
