"""The correctness router: P(expert answers this request right), for every expert, from one model.

A logistic regression over (question, expert) pairs, on the features of
:mod:`router.correct_features` (what the nearest recorded questions say about the expert, its
accuracy on the likely category, how hard the neighbourhood is, an embedding classifier per expert,
and the expert's own bias).  Routing:

- k = 1: the most probable expert;
- k > 1: the k most probable, whose answers are combined by a vote weighted by probability
  (:mod:`router.adaptive`; ties to the more probable expert);
- k = "auto" (:data:`AUTO`): experts in order of probability until the weighted vote is clear, by the
  stopping rule fitted on the training data (the Decision carries it as ``stopping``);
- ``cost_weight`` > 0: an expert's score is p - cost_weight * (its active parameters / the largest),
  so among experts of similar predicted correctness the smaller wins.

Each choice explains itself: its probability, its neighbours' record, the likely category.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from experts_registry.errors import ConfigError, InvalidRequest
from experts_registry.model import Expert

from .adaptive import Stopping, vote_weights
from .base import Choice, Decision, RouteRequest
from .checks import trained_candidates
from .correct_features import KS, neighbour_accuracy, probabilities, question_features
from .knn import nearest
from .state import load_state, save_state

AUTO = 0          # k = AUTO asks for adaptive k


def parse_k(value) -> int:
    """A request's k: a positive integer, or "auto" (-> AUTO)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return AUTO
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = -1
    if isinstance(value, bool) or k < 1:
        raise InvalidRequest(f"k must be a positive integer or \"auto\" (got {value!r})", param="k")
    return k
DEFAULTS = {"cost_weight": 0.0}
ARRAYS = ("experts", "embeddings", "correct", "global_accuracy", "weights", "bias", "cat_names",
          "cat_weights", "cat_bias", "cat_accuracy", "emb_weights", "emb_bias", "params_b")


class CorrectnessRouter:
    name = "correct"
    needs_embedding = True

    def __init__(self, arrays: dict, encoder: str | None, stopping: Stopping, **params):
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown correct-router option(s): {', '.join(sorted(unknown))}", param="router")
        self.a = {k: np.asarray(v) for k, v in arrays.items()}
        self.experts = tuple(str(e) for e in self.a["experts"])
        self.encoder = encoder
        self.stopping = stopping
        self.params = {**DEFAULTS, **params}
        self.dim = int(self.a["embeddings"].shape[1])

    # ---- state -------------------------------------------------------------
    def save(self, folder, meta=None):
        return save_state(folder, self.name, self.a, {"encoder": self.encoder, "params": self.params,
                                                       "stopping": self.stopping.to_dict(), **(meta or {})})

    @classmethod
    def from_state(cls, state: str | None = None, generalist: str | None = None, **overrides):
        """Load trained state; ``generalist`` is accepted (uniform factory) and unused."""
        a, meta, _ = load_state(state, cls.name)
        missing = [k for k in ARRAYS if k not in a]
        if missing or not meta.get("encoder"):
            raise ConfigError(f"the correct router's state at {state} is incomplete ({', '.join(missing) or 'encoder'}"
                              "): retrain it with 'conclave router train correct'", param="router")
        return cls(a, meta["encoder"], Stopping(**meta.get("stopping", {})), **{**meta.get("params", {}), **overrides})

    def with_cost(self, cost_weight: float) -> "CorrectnessRouter":
        """The same fitted router with another price weight (state shared, nothing copied)."""
        return CorrectnessRouter(self.a, self.encoder, self.stopping, **{**self.params, "cost_weight": cost_weight})

    # ---- prediction ----------------------------------------------------------
    def probabilities(self, embedding: np.ndarray) -> tuple[np.ndarray, dict]:
        """P(right) per trained expert, and the evidence behind it."""
        a = self.a
        if embedding.shape[-1] != self.dim:
            raise ConfigError(f"the correct router was trained on {self.dim}-d embeddings ({self.encoder}), "
                              f"got {embedding.shape[-1]}-d: route with that encoder or retrain", param="router")
        idx, sims = nearest(a["embeddings"], embedding, max(KS))
        nb = neighbour_accuracy(sims[None], a["correct"][idx][None], a["global_accuracy"])
        z = a["cat_weights"] @ embedding + a["cat_bias"]
        pc = np.exp(z - z.max())
        pc /= pc.sum()
        cat = (pc @ a["cat_accuracy"])[None]
        emb = (a["emb_weights"] @ embedding + a["emb_bias"])[None]
        p = probabilities(question_features(nb, cat, emb)[0], a["weights"], float(a["bias"]))
        top = int(np.argmax(pc))
        evidence = {"nb": nb[0], "category": str(a["cat_names"][top]), "category_p": float(pc[top]),
                    "difficulty": float(nb[0, 1].mean()), "cosine": (float(sims.min()), float(sims.max())),
                    "neighbours": len(idx)}
        return p, evidence

    # ---- routing -------------------------------------------------------------
    def route(self, request: RouteRequest, candidates: Sequence[Expert], k: int = 1) -> Decision:
        names = trained_candidates(self.name, request, candidates, self.experts)
        cols = [self.experts.index(n) for n in names]
        p, ev = self.probabilities(np.asarray(request.embedding, dtype=np.float32))
        score = p[cols] - self.params["cost_weight"] * self.a["params_b"][cols] / max(self.a["params_b"].max(), 1e-9)
        order = [int(i) for i in np.argsort(-score, kind="stable")]
        auto = k == AUTO
        k = min(self.stopping.max_calls if auto else max(1, k), len(names))
        choices = [Choice(names[i], float(p[cols[i]]), self._why(cols[i], p, ev) if r < max(k, 5) else {})
                   for r, i in enumerate(order)]
        choices += [Choice(c.name, 0.0, {"trained": False}) for c in candidates if c.name not in self.experts]
        stopping = self.stopping.to_dict() if auto else None
        weights = tuple(float(w) for w in vote_weights([c.score for c in choices]))
        return Decision(tuple(choices), k, self.name, self._reason(choices[:k], ev, auto), stopping, weights)

    def _why(self, col: int, p: np.ndarray, ev: dict) -> dict:
        return {"p_correct": round(float(p[col]), 3),
                "neighbour_accuracy": round(float(ev["nb"][1, col]), 3),
                "category_accuracy": round(float(self.a["cat_accuracy"][:, col].max()), 3),
                "global_accuracy": round(float(self.a["global_accuracy"][col]), 3)}

    def _reason(self, chosen: list[Choice], ev: dict, auto: bool) -> str:
        picks = ", ".join(f"{c.expert} (p={c.score:.2f})" for c in chosen)
        lo, hi = ev["cosine"]
        how = (f"called in this order until the weighted vote is clear (margin >= {self.stopping.threshold:.2f}, "
               f"{self.stopping.min_calls}-{self.stopping.max_calls} calls)" if auto
               else "weighted vote by probability" if len(chosen) > 1 else "most likely right")
        return (f"predicted correctness: {picks}, {how}; likely category {ev['category']} "
                f"(p={ev['category_p']:.2f}), neighbourhood difficulty {ev['difficulty']:.2f} "
                f"({ev['neighbours']} nearest recorded questions, cosine {lo:.2f} to {hi:.2f})")
