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
from .correct_features import KS, direct_probabilities, neighbour_accuracy, search_vectors
from .knn import nearest_many
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
        self.dim = int(self.a["cat_weights"].shape[1])          # the encoder's dimension
        self.search_dims = int(self.a["embeddings"].shape[1])  # neighbours: its first dimensions

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
        p, evidence = self.probabilities_many(np.asarray(embedding, dtype=np.float32)[None])
        return p[0], evidence[0]

    def probabilities_many(self, embeddings: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """P(right) (n, experts) for n embeddings at once (one product against the recorded
        questions), and each row's evidence."""
        a = self.a
        if embeddings.shape[-1] != self.dim:
            raise ConfigError(f"the correct router was trained on {self.dim}-d embeddings ({self.encoder}), "
                              f"got {embeddings.shape[-1]}-d: route with that encoder or retrain", param="router")
        idx, sims = nearest_many(a["embeddings"], search_vectors(embeddings, self.search_dims), max(KS))
        nb = neighbour_accuracy(sims, a["correct"][idx], a["global_accuracy"])
        z = embeddings @ a["cat_weights"].T + a["cat_bias"]
        pc = np.exp(z - z.max(axis=1, keepdims=True))
        pc /= pc.sum(axis=1, keepdims=True)
        emb = embeddings @ a["emb_weights"].T + a["emb_bias"]
        p = direct_probabilities(nb, pc @ a["cat_accuracy"], emb, a["weights"], float(a["bias"]))
        top = pc.argmax(axis=1)
        evidence = [{"nb": nb[i], "category": str(a["cat_names"][top[i]]), "category_p": float(pc[i, top[i]]),
                     "difficulty": float(nb[i, 1].mean()), "cosine": (float(sims[i].min()), float(sims[i].max())),
                     "neighbours": idx.shape[1]} for i in range(len(p))]
        return p, evidence

    # ---- routing -------------------------------------------------------------
    def route(self, request: RouteRequest, candidates: Sequence[Expert], k: int = 1) -> Decision:
        return self.route_many([request], candidates, k)[0]

    def route_many(self, requests: Sequence[RouteRequest], candidates: Sequence[Expert],
                   k: int = 1) -> list[Decision]:
        """One decision per request, the probabilities of all of them computed at once (batches)."""
        checked = [trained_candidates(self.name, r, candidates, self.experts) for r in requests]
        if not checked:
            return []
        p, evidence = self.probabilities_many(np.stack([np.asarray(r.embedding, dtype=np.float32)
                                                         for r in requests]))
        return [self._decide(names, candidates, k, p[i], evidence[i]) for i, names in enumerate(checked)]

    def _decide(self, names: list[str], candidates: Sequence[Expert], k: int, p: np.ndarray, ev: dict) -> Decision:
        cols = [self.experts.index(n) for n in names]
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
