"""Vector helpers shared by the encoders and routers (pure, numpy only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from experts_registry.errors import InvalidRequest


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidRequest("encode() takes a list of texts, not one string")
    out = list(texts)
    if any(not isinstance(t, str) or not t.strip() for t in out):
        raise InvalidRequest("cannot embed an empty prompt: send some text to route")
    return out
