"""Category router: Composition of Experts (SambaNova, 2024).

1. A linear classifier over the request embedding gives a distribution p over
   categories (softmax(W e + b); fitted with scikit-learn, applied in numpy).
2. A category -> expert map picks each category's expert from per-category
   accuracy, optionally under a budget on average active parameters
   (:func:`category_map`, an exact DP over the small integer program).
3. When the normalised entropy H(p) / log(C) exceeds ``entropy_threshold``,
   the request goes to the configured generalist instead.
For k > 1 the rest of the ranking is by expected accuracy sum_c p_c acc[c, m].
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from experts_registry.errors import ConfigError
from experts_registry.model import Expert

from .base import Choice, Decision, RouteRequest
from .checks import trained_candidates
from .state import load_state, save_state


def category_map(accuracy: np.ndarray, freq: np.ndarray, params: np.ndarray,
                 budget: float | None = None, steps: int = 2000) -> np.ndarray:
    """Expert index per category maximising sum_c freq_c acc[c, e_c].

    With ``budget``: subject to sum_c freq_c params[e_c] <= budget, a multiple-choice
    knapsack solved by DP on costs in 1/steps of the budget; the capacity shrinks
    until the exact (unrounded) cost of the answer fits.
    """
    if budget is None:
        return np.argmax(accuracy, axis=1)
    freq = freq / freq.sum()
    exact = np.outer(freq, params)                                     # (C, E) share of the average
    if exact.min(axis=1).sum() > budget + 1e-9:
        raise ConfigError(f"no category -> expert map fits an average of {budget}B active parameters",
                          param="budget")
    cost = np.floor(exact / budget * steps + 1e-9).astype(np.int64)
    for capacity in range(steps, steps - len(freq) - 2, -1):
        choice = _knapsack(freq[:, None] * accuracy, cost, capacity)
        if exact[np.arange(len(freq)), choice].sum() <= budget + 1e-9:
            return choice
    return np.argmin(exact, axis=1)                                    # unreachable in practice


def _knapsack(value: np.ndarray, cost: np.ndarray, capacity: int) -> np.ndarray:
    best = np.full(capacity + 1, -np.inf)
    best[0] = 0.0
    pick = np.zeros((len(value), capacity + 1), dtype=np.int64)
    for c in range(len(value)):
        new = np.full(capacity + 1, -np.inf)
        for e in range(value.shape[1]):
            if cost[c, e] > capacity:
                continue
            shifted = np.full(capacity + 1, -np.inf)
            shifted[cost[c, e]:] = best[: capacity + 1 - cost[c, e]] + value[c, e]
            better = shifted > new
            new[better], pick[c, better] = shifted[better], e
        best = new
    used, out = int(np.argmax(best)), np.zeros(len(value), dtype=np.int64)
    for c in reversed(range(len(value))):
        out[c] = pick[c, used]
        used -= cost[c, out[c]]
    return out


def normalised_entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(max(len(p), 2))) if len(p) > 1 else 0.0


class CategoryRouter:
    name = "coe"
    needs_embedding = True

    def __init__(self, categories: Sequence[str], experts: Sequence[str], weights: np.ndarray,
                 bias: np.ndarray, accuracy: np.ndarray, mapping: Sequence[int], generalist: str,
                 entropy_threshold: float = 1.0, encoder: str | None = None):
        self.categories = tuple(categories)
        self.experts = tuple(experts)
        self.weights = np.asarray(weights, dtype=np.float32)     # (C, d)
        self.bias = np.asarray(bias, dtype=np.float32)           # (C,)
        self.accuracy = np.asarray(accuracy, dtype=np.float32)   # (C, E)
        self.mapping = [int(m) for m in mapping]                 # category -> expert index
        if generalist not in self.experts:
            raise ConfigError(f"generalist {generalist!r} is not among the router's experts", param="generalist")
        self.generalist = generalist
        self.entropy_threshold = float(entropy_threshold)
        self.encoder = encoder

    def save(self, folder, meta: Mapping | None = None):
        arrays = {"categories": np.array(self.categories), "experts": np.array(self.experts),
                  "weights": self.weights, "bias": self.bias, "accuracy": self.accuracy,
                  "mapping": np.array(self.mapping)}
        return save_state(folder, self.name, arrays,
                          {"generalist": self.generalist, "entropy_threshold": self.entropy_threshold,
                           "encoder": self.encoder, **(meta or {})})

    @classmethod
    def from_state(cls, state: str | None = None, **overrides) -> "CategoryRouter":
        a, meta, _ = load_state(state, cls.name)
        options = {"generalist": meta["generalist"], "entropy_threshold": meta["entropy_threshold"],
                   "encoder": meta.get("encoder"), **overrides}
        return cls([str(c) for c in a["categories"]], [str(e) for e in a["experts"]], a["weights"],
                   a["bias"], a["accuracy"], a["mapping"], **options)

    def probabilities(self, embedding: np.ndarray) -> np.ndarray:
        z = self.weights @ np.asarray(embedding, dtype=np.float32) + self.bias
        z = np.exp(z - z.max())
        return z / z.sum()

    def route(self, request: RouteRequest, candidates: Sequence[Expert], k: int = 1) -> Decision:
        names = trained_candidates("coe", request, candidates, self.experts)
        p = self.probabilities(request.embedding)
        c, entropy = int(np.argmax(p)), normalised_entropy(p)
        cols = [self.experts.index(n) for n in names]
        expected = p @ self.accuracy[:, cols]
        mapped = self.experts[self.mapping[c]]
        uncertain = entropy > self.entropy_threshold
        first = self.generalist if uncertain else mapped
        order = sorted(range(len(names)), key=lambda i: (names[i] != first, -expected[i]))
        why = {"category": self.categories[c], "confidence": round(float(p[c]), 3),
               "entropy": round(entropy, 3)}
        choices = [Choice(names[i], float(expected[i]),
                          {**why, "category_accuracy": round(float(self.accuracy[c, cols[i]]), 3)})
                   for i in order]
        choices += [Choice(x.name, 0.0, {"trained": False}) for x in candidates if x.name not in self.experts]
        k = max(1, min(k, len(choices)))
        return Decision(tuple(choices), k, self.name, self._reason(why, first, mapped, uncertain))

    def _reason(self, why, first, mapped, uncertain) -> str:
        head = f"category {why['category']} (confidence {why['confidence']:.2f}, entropy {why['entropy']:.2f})"
        if uncertain:
            return (f"{head} above the entropy threshold {self.entropy_threshold:.2f}: sent to the "
                    f"generalist {first} instead of {mapped}")
        return f"{head}: mapped to {first}"
