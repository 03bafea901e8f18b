"""Scoring routing decisions against recorded answers (replay; no model is called).

A decision with k experts is right when the majority vote of those experts'
recorded answers is the gold answer, ties going to the expert the router
ranked higher.  Cost is the sum of the chosen experts' active parameters.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from experts_registry.model import Expert

from .adaptive import Stopping, cascade, weighted_vote
from .base import Decision, Router, RouteRequest, route_many
from .vote import vote, vote_correct

BATCH = 256          # requests routed together (routers with route_many find their neighbours at once)


def replay_experts(names: Sequence[str], active_params: Mapping[str, float | None] | None = None) -> list[Expert]:
    """Expert records standing for recorded models (never called)."""
    params = active_params or {}
    return [Expert(name=n, backend="litellm", model=f"replay/{n}", params_b=params.get(n))
            for n in names]


def route_all(router: Router, texts: Sequence[str], embeddings: np.ndarray | None,
              metadata: Sequence[Mapping] | None, candidates: Sequence[Expert], k: int) -> list[Decision]:
    requests = [RouteRequest(text, None if embeddings is None else embeddings[i], {} if metadata is None else metadata[i])
                for i, text in enumerate(texts)]
    out = []
    for start in range(0, len(requests), BATCH):
        out += route_many(router, requests[start:start + BATCH], candidates, k)
    return out


def chosen_columns(decisions: Sequence[Decision], experts: Sequence[str], k: int) -> np.ndarray:
    """(questions, k) column indices of the experts each decision called, best first."""
    col = {e: j for j, e in enumerate(experts)}
    rows = []
    for d in decisions:
        names = d.experts[:k]
        if len(names) < k:
            names = names + [names[-1]] * (k - len(names))      # fewer candidates than k
        rows.append([col[n] for n in names])
    return np.array(rows, dtype=np.int64).reshape(len(decisions), k)


def score_columns(cols: np.ndarray, answers: np.ndarray, gold: np.ndarray,
                  experts: Sequence[str], active_params: Mapping[str, float | None]) -> dict:
    """Accuracy and mean active parameters of calling the experts ``cols`` (questions, k)."""
    picked = np.take_along_axis(answers, cols, axis=1)
    right = vote_correct(picked, gold)
    params = np.array([active_params.get(e) or 0.0 for e in experts], dtype=np.float64)
    distinct = [len(set(r)) for r in cols.tolist()]
    mean_params = round(float(np.mean([params[list(set(r))].sum() for r in cols.tolist()])), 2)
    return {"accuracy": round(float(right.mean()), 4), "mean_active_params_b": mean_params,
            "active_params_per_question": mean_params,
            "calls_per_question": round(float(np.mean(distinct)), 2), "n": int(len(cols))}


def decision_answers(decision: Decision, experts: Sequence[str], answers: np.ndarray) -> tuple[int, list[int]]:
    """(final answer, experts called as columns) of one decision on one question's recorded answers:
    majority vote with rank ties, the decision's vote weights when it has them, and the adaptive
    cascade when it carries a stopping rule."""
    col = {e: j for j, e in enumerate(experts)}
    names = [c.expert for c in decision.choices if c.expert in col]
    cols = [col[n] for n in names[: decision.k]] or [col[names[0]]]
    row = answers[cols][None]
    if decision.stopping is not None:
        w = np.array(decision.weights[: len(cols)])[None]
        final, calls = cascade(row, w, Stopping(**decision.stopping))
        return int(final[0]), cols[: int(calls[0])]
    if decision.weights is not None:
        return int(weighted_vote(row, np.array(decision.weights[: len(cols)])[None])[0][0]), cols
    return int(vote(row)[0]), cols


def score_decisions(decisions: Sequence[Decision], experts: Sequence[str], answers: np.ndarray,
                    gold: np.ndarray, k: int, active_params: Mapping[str, float | None]) -> dict:
    """Accuracy, calls and active parameters per question of routing decisions (any vote, any k)."""
    right, calls, params = per_question(decisions, experts, answers, gold, active_params)
    return {"accuracy": round(float(right.mean()), 4), "mean_active_params_b": round(float(params.mean()), 2),
            "active_params_per_question": round(float(params.mean()), 2),
            "calls_per_question": round(float(calls.mean()), 2), "n": int(len(right))}


def per_question(decisions: Sequence[Decision], experts: Sequence[str], answers: np.ndarray, gold: np.ndarray,
                 active_params: Mapping[str, float | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right (n,), calls (n,), active parameters called (n,)) per question."""
    size = np.array([active_params.get(e) or 0.0 for e in experts], dtype=np.float64)
    right, calls, params = [], [], []
    for i, d in enumerate(decisions):
        final, cols = decision_answers(d, experts, answers[i])
        right.append(final == gold[i] and final >= 0)
        calls.append(len(set(cols)))
        params.append(size[list(set(cols))].sum())
    return np.array(right, dtype=np.float32), np.array(calls, dtype=np.float64), np.array(params)
