"""Keeping answers coming when experts misbehave: retries, circuit breakers, fallbacks.

- Retries: only for retryable upstream errors (connection errors, 429, 5xx), only
  before the first token, with exponential backoff that honours ``Retry-After``.
- Circuit breaker per expert: after ``threshold`` consecutive failures the expert
  is cooled down for ``cooldown`` seconds (calls fail fast with 503); then one
  trial call decides whether it closes again.
- Fallback (in the gateway): a routed request whose expert fails before its
  first token goes to the next expert of the routing decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from experts_registry.errors import ExpertUnavailable, UpstreamError


@dataclass
class Breaker:
    threshold: int = 3
    cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False

    def check(self, expert: str, now: float) -> None:
        if self.opened_at is None:
            return
        left = self.cooldown - (now - self.opened_at)
        if left > 0 or self.trial:
            raise ExpertUnavailable(f"expert {expert!r} is cooling down after {self.failures} failures in a row: "
                                    f"retried in {max(left, 0):.0f} s", expert=expert)
        self.trial = True  # half-open: let exactly one call through

    def success(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self, now: float) -> bool:
        """Count a failure; True when this one opened (or re-opened) the breaker."""
        self.failures += 1
        self.trial = False
        if self.failures >= self.threshold:
            self.opened_at = now
            return True
        return False


@dataclass
class Breakers:
    threshold: int = 3
    cooldown: float = 30.0
    by_expert: dict[str, Breaker] = field(default_factory=dict)

    def get(self, expert: str) -> Breaker:
        if expert not in self.by_expert:
            self.by_expert[expert] = Breaker(self.threshold, self.cooldown)
        return self.by_expert[expert]

    def open_experts(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [n for n, b in self.by_expert.items() if b.opened_at is not None and now - b.opened_at < b.cooldown]


def backoff_delay(attempt: int, exc: UpstreamError, base: float = 0.25, cap: float = 4.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): Retry-After when the
    upstream gave one (capped), else base * 2^(attempt-1)."""
    if exc.retry_after is not None:
        return min(max(exc.retry_after, 0.0), cap)
    return min(base * 2 ** (attempt - 1), cap)
