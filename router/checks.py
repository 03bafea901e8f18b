"""Input checks shared by the trained routers (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

from experts_registry.errors import ConfigError, InvalidRequest
from experts_registry.model import Expert

from .base import RouteRequest


def trained_candidates(router: str, request: RouteRequest, candidates: Sequence[Expert],
                       trained: Sequence[str]) -> list[str]:
    """The candidates' names the router was trained for, in candidate order; clear errors for an
    empty prompt, a missing embedding, or no trained expert among the candidates."""
    if not request.text or not request.text.strip():
        raise InvalidRequest("cannot route an empty prompt")
    if request.embedding is None:
        raise InvalidRequest(f"the {router} router needs the request embedding")
    names = [c.name for c in candidates if c.name in trained]
    if not names:
        raise ConfigError(f"the {router} router was trained for {', '.join(trained)}, none of which "
                          f"is a candidate: retrain it with 'conclave router train {router}'", param="router")
    return names
