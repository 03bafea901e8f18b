"""``vote``: majority vote over the experts' extracted final answers.

Each usable response votes for the answer it concluded with (see
:mod:`aggregators.extract`); unparsable responses do not vote.  The answer with
most votes wins; ties go to the answer whose voters have the larger summed router
score, then the one with the best single voter's score, then the router's order.
The client gets the full response of the winning answer's best-scored voter.
If nobody states a parsable answer, the best-ranked response is returned and the
detail says so.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import Candidate, Final, base_detail, check_choices, survivors
from .extract import extract_answer


class VoteAggregator:
    name = "vote"

    def plan(self, question: str, candidates: Sequence[Candidate], *, choices: str | None = None) -> Final:
        letters = check_choices(choices)
        alive = survivors(candidates)
        answers = {c.expert: extract_answer(c.text, letters) for c in alive}
        detail = base_detail(self.name, candidates)
        detail["answers"] = answers
        detail["unparsed"] = [name for name, a in answers.items() if a is None]
        voters: dict[str, list[Candidate]] = {}
        for c in alive:                                   # best-ranked first: dict keeps that order
            if answers[c.expert] is not None:
                voters.setdefault(answers[c.expert], []).append(c)
        if not voters:
            best = alive[0]
            detail.update(votes={}, answer=None, winner=best.expert, tie_break=None,
                          fallback="no expert stated a parsable final answer: "
                                   "returned the best-ranked expert's response")
            return Final(best.text, best.expert, detail)
        answer, tie_break = _elect(voters)
        winner = voters[answer][0]
        detail.update(votes={a: len(v) for a, v in voters.items()}, answer=answer,
                      winner=winner.expert, tie_break=tie_break)
        return Final(winner.text, winner.expert, detail)


def _elect(voters: dict[str, list[Candidate]]) -> tuple[str, str | None]:
    """The winning answer and what decided it: None (a clear majority), "score_sum",
    "best_score" or "rank" (the router's order, when everything else is equal)."""
    keys: list[tuple[str, Any]] = [
        ("votes", lambda v: len(v)),
        ("score_sum", lambda v: round(sum(c.score for c in v), 9)),
        ("best_score", lambda v: max(c.score for c in v)),
    ]
    tied = list(voters)
    for i, (label, key) in enumerate(keys):
        top = max(key(voters[a]) for a in tied)
        tied = [a for a in tied if key(voters[a]) == top]
        if len(tied) == 1:
            return tied[0], (None if i == 0 else label)
    return tied[0], "rank"
