"""Routers: pure functions from a request to an ordered choice of experts.

``ROUTERS`` maps a router's name to a factory ``f(**options) -> Router``.
"""

from __future__ import annotations

from .base import Choice, Decision, Router, RouteRequest
from .coe import CategoryRouter
from .correct import CorrectnessRouter
from .declared import DeclaredRouter
from .knn import KnnRouter
from .skills import SkillsRouter
from .tags import TagsRouter

# Fitted routers load their state: factory(state="DIR", **options); see router.training.
ROUTERS = {
    "tags": TagsRouter,
    "declared": DeclaredRouter,
    "skills": SkillsRouter.from_state,
    "coe": CategoryRouter.from_state,
    "knn": KnnRouter.from_state,
    "correct": CorrectnessRouter.from_state,
}

__all__ = ["ROUTERS", "Choice", "Decision", "Router", "RouteRequest", "TagsRouter",
           "SkillsRouter", "CategoryRouter", "KnnRouter", "CorrectnessRouter", "DeclaredRouter"]
