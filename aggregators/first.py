"""``first``: pass the best-ranked surviving expert's response through (the k = 1 default)."""

from __future__ import annotations

from typing import Sequence

from .base import Candidate, Final, base_detail, check_choices, survivors


class FirstAggregator:
    """Return the response of the usable candidate with the highest router score."""

    name = "first"

    def plan(self, question: str, candidates: Sequence[Candidate], *, choices: str | None = None) -> Final:
        check_choices(choices)
        best = survivors(candidates)[0]
        detail = base_detail(self.name, candidates)
        detail["winner"] = best.expert
        return Final(best.text, best.expert, detail)
