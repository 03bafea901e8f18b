"""The default before any training: the request's embedding against each expert's declared skills
and description (static encoder), so "Prove that sqrt 2 is irrational" finds the expert declared
with skill "math" although the word is not in the prompt.

Pure: the host embeds the prompt and each candidate's :func:`expert_texts` (cached) and passes the
latter as ``metadata["expert_vectors"]`` ({name: (texts, d) array}).  An expert's score is its best
cosine; below ``threshold``, or when nothing beats the generalist by ``margin``, the generalist
answers.  Generic skills ("general") are not matched.  Replaced by a trained router once one exists.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from experts_registry.errors import InvalidRequest
from experts_registry.model import Expert

from .base import Choice, Decision, RouteRequest

GENERIC = {"general", "generalist", "misc", "other"}
ENCODER = "static-minilm-256"


def expert_texts(expert: Expert) -> list[str]:
    """What an expert says it is good at: its skills (but generic ones) and its description."""
    texts = [s.replace("-", " ").replace("_", " ") for s in expert.skills if s.lower() not in GENERIC]
    return texts + ([expert.description] if expert.description and expert.description.strip() else [])


class DeclaredRouter:
    name = "declared"
    needs_embedding = True
    needs_expert_vectors = True
    encoder = ENCODER

    def __init__(self, generalist: str | None = None, threshold: float = 0.3, margin: float = 0.05):
        self.generalist, self.threshold, self.margin = generalist, threshold, margin

    def route(self, request: RouteRequest, candidates: Sequence[Expert], k: int = 1) -> Decision:
        if not candidates:
            raise InvalidRequest("no experts are registered: add one with 'conclave experts add'")
        if request.embedding is None:
            raise InvalidRequest("the declared router needs the request embedding")
        vectors = request.metadata.get("expert_vectors") or {}
        emb = np.asarray(request.embedding, dtype=np.float32)
        scored = []
        for order, expert in enumerate(candidates):
            texts, vecs = expert_texts(expert), vectors.get(expert.name)
            sims = vecs @ emb if vecs is not None and len(vecs) else np.zeros(0)
            best = int(np.argmax(sims)) if len(sims) else -1
            score = float(sims[best]) if best >= 0 else 0.0
            scored.append((score, -order, expert.name, texts[best] if best >= 0 else None))
        scored.sort(reverse=True)
        generalist = next((s for s in scored if s[2] == self.generalist), None)
        top = scored[0]
        if top[0] < self.threshold or (generalist and top is not generalist and top[0] < generalist[0] + self.margin):
            fallback = generalist or top
            scored.remove(fallback)
            scored.insert(0, fallback)
            reason = (f"no declared skill or description is close to the request (best {top[2]}: "
                      f"{top[3]!r}, cosine {top[0]:.2f} < {self.threshold}); sent to {fallback[2]}")
        else:
            reason = f"the request is closest to {top[2]}'s declared {top[3]!r} (cosine {top[0]:.2f}, static embedding)"
        choices = tuple(Choice(name, score, {"closest": text, "cosine": round(score, 3)})
                        for score, _, name, text in scored)
        return Decision(choices, max(1, min(k, len(choices))), self.name, reason)
