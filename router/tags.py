"""The default router: match prompt words against the experts' declared skills.

No fitting, no embedding.  Scores each candidate by how many of its skills
appear in the prompt; ties (and prompts matching nothing) go to the configured
generalist, then to registry order.
"""

from __future__ import annotations

import re
from typing import Sequence

from experts_registry.errors import InvalidRequest
from experts_registry.model import Expert

from .base import Choice, Decision, RouteRequest

WORD = re.compile(r"[a-z0-9][a-z0-9+#.-]*")


class TagsRouter:
    name = "tags"
    needs_embedding = False

    def __init__(self, generalist: str | None = None):
        self.generalist = generalist

    def route(self, request: RouteRequest, candidates: Sequence[Expert], k: int = 1) -> Decision:
        if not candidates:
            raise InvalidRequest("no experts are registered: add one with 'conclave experts add'")
        words = {w.rstrip(".-") for w in WORD.findall(request.text.lower())}
        scored = []
        for order, expert in enumerate(candidates):
            matched = sorted(s for s in expert.skills if s in words)
            bonus = 0.5 if expert.name == self.generalist else 0.0
            scored.append((len(matched) + bonus, -order, expert.name, matched))
        scored.sort(reverse=True)
        choices = tuple(Choice(name, float(score), {"matched_skills": matched})
                        for score, _, name, matched in scored)
        top = choices[0]
        if top.why["matched_skills"]:
            reason = f"skills {', '.join(top.why['matched_skills'])} matched {top.expert}"
        else:
            reason = f"no skill matched; sent to the generalist {top.expert}"
        return Decision(choices, max(1, min(k, len(choices))), self.name, reason)
