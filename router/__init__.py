"""Routers: pure functions from a request to an ordered choice of experts.

``ROUTERS`` maps a router's name to a factory ``f(**options) -> Router``.
"""

from __future__ import annotations

from .base import Choice, Decision, Router, RouteRequest
from .tags import TagsRouter

ROUTERS = {
    "tags": TagsRouter,
}

__all__ = ["ROUTERS", "Choice", "Decision", "Router", "RouteRequest", "TagsRouter"]
