"""The router seam.

A router is pure: ``route()`` does no I/O and calls no model.  Anything it
needs (an embedding of the prompt, dataset labels) arrives in the
:class:`RouteRequest`; fitted state is loaded from files *before* routing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from experts_registry.model import Expert


@dataclass(frozen=True)
class RouteRequest:
    text: str                                   # the prompt to route (last user turn, usually)
    embedding: Any = None                       # numpy vector when the router needs one
    metadata: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"subject": "anatomy"}


@dataclass(frozen=True)
class Choice:
    expert: str
    score: float
    why: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    choices: tuple[Choice, ...]                 # every candidate considered, best first
    k: int
    router: str
    reason: str                                 # one line a person can read
    stopping: Mapping[str, Any] | None = None   # k = "auto": the rule that ends the calls (router.adaptive)
    weights: tuple[float, ...] | None = None    # vote weights of the choices, best first (None: majority)

    @property
    def experts(self) -> list[str]:
        return [c.expert for c in self.choices[: self.k]]

    def to_dict(self) -> dict:
        out = {"router": self.router, "k": self.k, "experts": self.experts, "reason": self.reason,
               "scores": [{"expert": c.expert, "score": round(c.score, 4), **dict(c.why)}
                          for c in self.choices[: max(self.k, 5)]]}
        if self.stopping is not None:
            out["stopping"] = dict(self.stopping)
        if self.weights is not None:
            out["vote_weights"] = [round(w, 4) for w in self.weights[: max(self.k, 5)]]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Decision":
        """The inverse of ``to_dict`` (as far as it goes: rounded scores, the first max(k, 5) choices)."""
        choices = tuple(Choice(s["expert"], s["score"], {k: v for k, v in s.items() if k not in ("expert", "score")})
                        for s in data["scores"])
        weights = tuple(data["vote_weights"]) if data.get("vote_weights") is not None else None
        return cls(choices, data["k"], data["router"], data["reason"], data.get("stopping"), weights)


class Router(Protocol):
    name: str
    needs_embedding: bool

    def route(self, request: RouteRequest, candidates: Sequence[Expert], k: int = 1) -> Decision: ...


def route_many(router: Router, requests: Sequence[RouteRequest], candidates: Sequence[Expert],
               k: int = 1) -> list[Decision]:
    """Decisions for a batch of requests: the router's own ``route_many`` where it has one (the
    neighbour routers find every request's neighbours in one product), else one ``route`` each.
    Either way the decisions are those ``route`` gives one at a time."""
    many = getattr(router, "route_many", None)
    if many is not None:
        return many(requests, candidates, k)
    return [router.route(r, candidates, k) for r in requests]
