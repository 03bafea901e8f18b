"""Living with Redis going away: recognise its outages, say so in one line, come back with backoff.

Used by the CLI (one clean line instead of a traceback), the HTTP layer (503 with Retry-After naming
Redis instead of a 500) and the queue's worker loop (reconnect, re-create the consumer group). Also the
start-up check that a Redis holding the registry keeps its data on disk.
"""

from __future__ import annotations

import logging
import time

from experts_registry.errors import ConfigError, DependencyUnavailable

RETRY_AFTER_S = 2.0


def is_redis_down(exc: BaseException) -> bool:
    """True for redis-py's connection and timeout errors (Redis stopped, restarting, unreachable)."""
    try:
        import redis
    except ImportError:
        return False
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


def unavailable(exc: BaseException | None = None) -> DependencyUnavailable:
    why = f" ({type(exc).__name__})" if exc is not None else ""
    return DependencyUnavailable(f"Redis, which this gateway needs for this request, does not answer{why}: "
                                 f"retry in a few seconds", retry_after=RETRY_AFTER_S)


class Outage:
    """One log line when Redis goes away and one when it is back, whatever the number of retries
    in between; ``failed`` returns how long to wait before the next try (exponential, capped)."""

    def __init__(self, log: logging.Logger, who: str, base: float = 0.1, cap: float = 5.0):
        self.log, self.who, self.base, self.cap = log, who, base, cap
        self.since: float | None = None
        self.tries = 0

    def failed(self, exc: BaseException) -> float:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s: Redis does not answer (%s: %s); retrying with backoff", self.who,
                             type(exc).__name__, exc)
        self.tries += 1
        return min(self.base * 2 ** (self.tries - 1), self.cap)

    def recovered(self) -> bool:
        """True (and one log line) on the first success after an outage."""
        if self.since is None:
            return False
        self.log.warning("%s: Redis is back after %.1f s", self.who, time.monotonic() - self.since)
        self.since, self.tries = None, 0
        return True


def persistence(r) -> str | None:
    """How a Redis keeps its data ('aof', 'rdb'), None when it keeps nothing on disk, or 'unknown'
    when CONFIG is not allowed (managed services rename it)."""
    try:
        aof = r.config_get("appendonly").get("appendonly", "no")
        save = r.config_get("save").get("save", "")
    except Exception as exc:  # noqa: BLE001 - a ResponseError when CONFIG is disabled
        if is_redis_down(exc):
            raise
        return "unknown"
    if str(aof).lower() == "yes":
        return "aof"
    return "rdb" if str(save).strip() else None


def require_persistence(r, url: str, allow_volatile: bool) -> str | None:
    """Refuse a Redis that keeps nothing on disk as the registry's store (experts and API keys would
    vanish with its next restart), unless the operator allowed it."""
    kind = persistence(r)
    if kind is None and not allow_volatile:
        raise ConfigError(
            f"the Redis at {url} keeps nothing on disk (appendonly no, save ''): a restart would lose every "
            "registered expert and API key. Enable AOF ('redis-cli CONFIG SET appendonly yes' and "
            "'appendonly yes' in redis.conf), or start the gateway with --allow-volatile-redis "
            "(CONCLAVE_ALLOW_VOLATILE_REDIS=1) to accept that")
    return kind
