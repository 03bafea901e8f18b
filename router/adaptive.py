"""Weighted votes and adaptive k: call experts in order of predicted correctness until the vote is clear.

Weights: an expert that answers right with probability p among K options votes with
``log((K - 1) p / (1 - p))``, the optimal weight of independent voters (Nitzan & Paroush); it is the
log-odds ``log(p / (1 - p))`` shifted so that a better-than-chance expert always counts for its
answer.  Ties go to the expert called first (the higher probability).

Adaptive k (``k: "auto"``): call the ``min_calls`` most probable experts, then one more at a time
while the weighted vote's margin (winner's weight minus the runner-up's) is below ``threshold``,
at most ``max_calls``.  :func:`fit_stopping` picks ``min_calls``, ``threshold`` and ``max_calls``
that maximise accuracy on training questions within a budget of mean calls.

Answers are small integers (0-9 for options A-J); a negative one casts no vote.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

import numpy as np

OPTIONS = 10          # MMLU-Pro's A-J; the weight only needs an order of magnitude
P_CLIP = (0.02, 0.98)
TIE = 1e-6            # a tie goes to the voter called first


def vote_weights(p: np.ndarray, options: int = OPTIONS) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), *P_CLIP)
    return np.maximum(np.log((options - 1) * p / (1 - p)), 1e-3)


def weighted_tally(answers: np.ndarray, weights: np.ndarray, calls: int, options: int = OPTIONS) -> np.ndarray:
    """(n, options) summed weights of the first ``calls`` voters of each row (voters best first)."""
    n = answers.shape[0]
    tally = np.zeros((n, options))
    rows = np.arange(n)
    for i in range(calls):
        ok = (answers[:, i] >= 0) & (answers[:, i] < options)
        tally[rows[ok], answers[ok, i]] += weights[ok, i] + TIE * (calls - i)
    return tally


def weighted_vote(answers: np.ndarray, weights: np.ndarray, calls: int | None = None,
                  options: int = OPTIONS) -> tuple[np.ndarray, np.ndarray]:
    """(winner (n,), margin (n,)) of the weighted vote; winner -1 where nobody answered."""
    answers = np.atleast_2d(answers)
    weights = np.atleast_2d(weights)
    tally = weighted_tally(answers, weights, answers.shape[1] if calls is None else calls, options)
    top = np.sort(tally, axis=1)
    winner = np.where(top[:, -1] > 0, tally.argmax(axis=1), -1)
    return winner, top[:, -1] - top[:, -2]


@dataclass(frozen=True)
class Stopping:
    min_calls: int = 2
    threshold: float = 1.0
    max_calls: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


def cascade(answers: np.ndarray, weights: np.ndarray, rule: Stopping) -> tuple[np.ndarray, np.ndarray]:
    """Replay of adaptive k.  answers, weights (n, >= max_calls), experts in call order.
    Returns (final answer (n,), calls made (n,))."""
    n = answers.shape[0]
    final = np.full(n, -1)
    calls = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    last = min(rule.max_calls, answers.shape[1])
    for j in range(min(rule.min_calls, last), last + 1):
        winner, margin = weighted_vote(answers, weights, j)
        stop = ~done & ((margin >= rule.threshold) | (j == last))
        final[stop], calls[stop] = winner[stop], j
        done |= stop
    return final, calls


def should_stop(answers: list[int], weights: list[float], rule: Stopping) -> bool:
    """The live form of :func:`cascade`'s test, after len(answers) calls."""
    j = len(answers)
    if j < rule.min_calls:
        return False
    if j >= rule.max_calls:
        return True
    _, margin = weighted_vote(np.array([answers]), np.array([weights]))
    return bool(margin[0] >= rule.threshold)


def fit_stopping(answers: np.ndarray, weights: np.ndarray, gold: np.ndarray, budget: float = 3.0,
                 thresholds=np.linspace(0.0, 6.0, 25), min_calls=(1, 2), max_calls=(3, 4, 5, 6)) -> dict:
    """The rule with the best accuracy whose mean number of calls stays within ``budget``."""
    best = None
    for lo, hi, t in product(min_calls, max_calls, thresholds):
        if lo > hi or hi > answers.shape[1]:
            continue
        rule = Stopping(lo, float(t), hi)
        final, calls = cascade(answers, weights, rule)
        acc, mean_calls = float((final == gold).mean()), float(calls.mean())
        if mean_calls <= budget and (best is None or (acc, -mean_calls) > (best[0], -best[1])):
            best = (acc, mean_calls, rule)
    if best is None:
        return {"rule": Stopping(1, 0.0, 1).to_dict(), "accuracy": None, "calls": 1.0}
    return {"rule": best[2].to_dict(), "accuracy": round(best[0], 4), "calls": round(best[1], 3)}
