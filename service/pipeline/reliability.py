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

import asyncio
import math
import time
from dataclasses import dataclass, field

from experts_registry.errors import ExpertUnavailable, UpstreamError


@dataclass
class Breaker:
    """Closed (calls pass), open (calls fail fast for the rest of ``cooldown``), half-open (one trial
    call runs; the others wait for its outcome through ``trial_done``). Only the expert's own failures
    count: a caller's mistake (a UserError) neither opens nor closes it."""
    threshold: int = 3
    cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False
    trial_done: asyncio.Event | None = field(default=None, repr=False)
    last_error: str | None = None          # the newest failure's message, and when (monotonic): the dashboard
    last_error_at: float | None = None

    def check(self, expert: str, now: float) -> tuple[asyncio.Event | None, asyncio.Event | None]:
        """(mine, wait): ``wait`` is an Event to wait on while another call is the half-open trial; else
        the call may go, and ``mine`` is set when it is the trial. ExpertUnavailable, with an honest
        retry_after, while the breaker is open."""
        if self.opened_at is None:
            return None, None
        left = self.cooldown - (now - self.opened_at)
        if left > 0:
            raise ExpertUnavailable(f"expert {expert!r} is cooling down after {self.failures} failures in a row: "
                                    f"retry in {max(1, math.ceil(left))} s", expert=expert,
                                    retry_after=max(1.0, left))
        if self.trial:
            return None, self.trial_done
        self.trial, self.trial_done = True, asyncio.Event()   # half-open: exactly one call goes through
        return self.trial_done, None

    def _end_trial(self) -> None:
        self.trial = False
        if self.trial_done is not None:
            self.trial_done.set()
            self.trial_done = None

    def success(self) -> None:
        self.failures, self.opened_at = 0, None
        self._end_trial()

    def failure(self, now: float, message: str | None = None) -> bool:
        """Count a failure; True when this one opened (or re-opened) the breaker."""
        self.failures += 1
        self.last_error, self.last_error_at = message, now
        self._end_trial()
        if self.failures >= self.threshold:
            self.opened_at = now
            return True
        return False

    def release(self, mine: asyncio.Event | None) -> None:
        """The trial call ``mine`` ended without a verdict (the client left, or its own request was at
        fault): the next waiting call becomes the trial."""
        if mine is not None and self.trial and self.trial_done is mine:
            self._end_trial()


@dataclass
class Breakers:
    threshold: int = 3
    cooldown: float = 30.0
    by_expert: dict[str, Breaker] = field(default_factory=dict)

    def get(self, expert: str) -> Breaker:
        if expert not in self.by_expert:
            self.by_expert[expert] = Breaker(self.threshold, self.cooldown)
        return self.by_expert[expert]

    def state(self, expert: str, now: float) -> dict:
        """The breaker of ``expert`` as the dashboard shows it: closed, open (seconds left) or half-open."""
        b = self.by_expert.get(expert)
        if b is None:
            return {"state": "closed", "failures": 0}
        out: dict = {"state": "closed", "failures": b.failures}
        if b.opened_at is not None:
            left = b.cooldown - (now - b.opened_at)
            out["state"] = "open" if left > 0 else "half-open"
            if left > 0:
                out["retry_in_s"] = round(left, 1)
        if b.last_error is not None and b.last_error_at is not None:
            out["last_error"], out["last_error_age_s"] = b.last_error, round(now - b.last_error_at, 1)
        return out

    def open_experts(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [n for n, b in self.by_expert.items() if b.opened_at is not None and now - b.opened_at < b.cooldown]


def backoff_delay(attempt: int, exc: UpstreamError, base: float = 0.25, cap: float = 4.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): Retry-After when the
    upstream gave one (capped), else base * 2^(attempt-1)."""
    if exc.retry_after is not None:
        return min(max(exc.retry_after, 0.0), cap)
    return min(base * 2 ** (attempt - 1), cap)
