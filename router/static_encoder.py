"""The static encoder: a token-embedding table distilled from the bundled MiniLM (model2vec format).

An embedding is the mean of the rows of the text's word pieces (no special tokens, unknown pieces
dropped, at most ``max_length`` pieces), L2-normalised: what model2vec's ``StaticModel.encode``
computes, here with ``tokenizers`` and ``safetensors`` only (no torch, no hub).  The table ships in
``router/data/static-minilm-256`` (15 MB; ``scripts/distill_static_encoder.py`` remakes it).
About 0.1-0.3 ms a question on one core, thousands a second in batches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from experts_registry.errors import ConfigError

from .vectors import check_texts, normalise

STATIC_DIR = Path(__file__).parent / "data" / "static-minilm-256"


class StaticEncoder:
    """Mean of distilled token vectors; deterministic, loaded on first use."""

    def __init__(self, folder: str | Path | None = None, max_length: int | None = None,
                 threads: int | None = None):
        """``threads`` is accepted like MiniLM's and unused: encoding is one numpy gather and mean."""
        self.folder = Path(folder) if folder else STATIC_DIR
        self.name = "static-minilm-256" if folder is None else f"static:{self.folder.name}"
        self.max_length = max_length
        self._table: np.ndarray | None = None
        self._tokenizer = None
        self._unk: int | None = None
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
            if limit:
                tokenizer.enable_truncation(int(limit))
            else:
                tokenizer.no_truncation()
            self._table = load_file(str(self.folder / "model.safetensors"))["embeddings"].astype(np.float32)
            self._tokenizer = tokenizer
            self._unk = tokenizer.token_to_id("[UNK]")
        return self._table, self._tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        table, tokenizer = self._load()
        if not texts:
            return np.zeros((0, table.shape[1]), dtype=np.float32)
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        for row, enc in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = [i for i in enc.ids if i != self._unk]
            if ids:
                out[row] = table[ids].mean(axis=0)
        return normalise(out)
