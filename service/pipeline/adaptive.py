"""k = "auto" live: ask experts in order of predicted correctness until their weighted vote is clear.

The decision (the correctness router's) carries the order, each expert's vote weight and the
stopping rule fitted on training data (:mod:`router.adaptive`).  The first ``min_calls`` experts
are asked at once, then one more at a time while the rule says go on.  The answer is the weighted
vote's winner (the full response of its best-ranked voter); the detail reports the calls made.
"""

from __future__ import annotations

from aggregators.base import Candidate, Final
from aggregators.extract import extract_answer
from router.adaptive import Stopping, should_stop

from .fanout import add_usage, ask_all


def _votes(candidates: list[Candidate], weights: list[float]) -> tuple[list[int], list[float], list[str]]:
    """Extracted answers as small integers (-1: none), their weights, and the distinct answers."""
    distinct: list[str] = []
    codes = []
    for c in candidates:
        answer = extract_answer(c.text) if c.usable else None
        if answer is not None and answer not in distinct:
            distinct.append(answer)
        codes.append(distinct.index(answer) if answer is not None else -1)
    return codes, weights[: len(candidates)], distinct


async def ask_until_clear(call, experts: list, weights: list[float], rule: Stopping, messages, params):
    """(candidates asked, usage).  ``experts`` are (Expert, score) in call order."""
    first = min(max(rule.min_calls, 1), len(experts))
    candidates, usage = await ask_all(call, experts[:first], messages, params)
    for expert in experts[first:]:
        codes, w, _ = _votes(candidates, weights)
        if should_stop(codes, w, rule):
            break
        more, extra = await ask_all(call, [expert], messages, params)
        candidates, usage = candidates + more, add_usage(usage, extra)
    return candidates, usage


def weighted_plan(candidates: list[Candidate], weights: list[float], rule: Stopping) -> Final:
    codes, w, distinct = _votes(candidates, weights)
    tally: dict[int, float] = {}
    for code, weight in zip(codes, w):
        if code >= 0:
            tally[code] = tally.get(code, 0.0) + weight
    detail = {"aggregator": "weighted-vote", "calls": len(candidates), "stopping": rule.to_dict(),
              "answers": {c.expert: (distinct[k] if k >= 0 else None) for c, k in zip(candidates, codes)},
              "votes": {distinct[k]: round(v, 3) for k, v in tally.items()}}
    if not tally:
        best = next((c for c in candidates if c.usable), candidates[0])
        detail.update(answer=None, winner=best.expert,
                      fallback="no expert stated a parsable final answer: returned the best-ranked response")
        return Final(best.text, best.expert, detail)
    top = max(tally.values())
    winner_code = next(k for k in codes if k >= 0 and tally[k] == top)    # ties: the earlier voter
    winner = next(c for c, k in zip(candidates, codes) if k == winner_code)
    detail.update(answer=distinct[winner_code], winner=winner.expert)
    return Final(winner.text, winner.expert, detail)
