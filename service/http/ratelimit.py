"""Per-key limits: requests and tokens per minute, in fixed one-minute windows.

With Redis configured the counters live there, so every gateway replica shares
them; otherwise they live in this process.  Over a limit: RateLimited (429)
with Retry-After = seconds to the next window.
"""

from __future__ import annotations

import time
from collections import defaultdict

from experts_registry.errors import RateLimited

from .auth import Principal


def _window(now: float) -> tuple[int, float]:
    minute = int(now // 60)
    return minute, 60 - (now % 60)


class MemoryCounters:
    def __init__(self):
        self.counts: dict[str, int] = defaultdict(int)
        self.minute = -1

    async def incr(self, key: str, amount: int, minute: int) -> int:
        if minute != self.minute:
            self.counts.clear()
            self.minute = minute
        self.counts[key] += amount
        return self.counts[key]

    async def get(self, key: str, minute: int) -> int:
        return self.counts.get(key, 0) if minute == self.minute else 0


class RedisCounters:
    def __init__(self, url: str, prefix: str):
        import redis.asyncio as aioredis

        self.r = aioredis.Redis.from_url(url, socket_timeout=5)
        self.prefix = prefix + "rl:"

    async def incr(self, key: str, amount: int, minute: int) -> int:
        name = f"{self.prefix}{key}:{minute}"
        pipe = self.r.pipeline(transaction=True)
        pipe.incrby(name, amount)
        pipe.expire(name, 120)
        value, _ = await pipe.execute()
        return int(value)

    async def get(self, key: str, minute: int) -> int:
        value = await self.r.get(f"{self.prefix}{key}:{minute}")
        return int(value or 0)


class RateLimiter:
    def __init__(self, redis_url: str | None = None, prefix: str = "conclave:"):
        self.counters = RedisCounters(redis_url, prefix) if redis_url else MemoryCounters()

    async def admit(self, p: Principal, now: float | None = None) -> dict[str, str]:
        """Count one request; refuse it when the key is over its requests or tokens this minute. Returns
        the ``x-ratelimit-*`` headers OpenAI clients read (none for a key without limits)."""
        if p.rpm is None and p.tpm is None:
            return {}
        minute, retry = _window(time.time() if now is None else now)
        headers: dict[str, str] = {}
        if p.tpm is not None:
            used = await self.counters.get(f"{p.key_id}:tok", minute)
            if used >= p.tpm:
                raise RateLimited(f"this key used its {p.tpm} tokens per minute: retry in {retry:.0f} s",
                                  retry_after=retry)
            headers.update({"x-ratelimit-limit-tokens": str(p.tpm),
                            "x-ratelimit-remaining-tokens": str(max(0, p.tpm - used)),
                            "x-ratelimit-reset-tokens": f"{retry:.0f}s"})
        if p.rpm is not None:
            count = await self.counters.incr(f"{p.key_id}:req", 1, minute)
            if count > p.rpm:
                raise RateLimited(f"this key made its {p.rpm} requests per minute: retry in {retry:.0f} s",
                                  retry_after=retry)
            headers.update({"x-ratelimit-limit-requests": str(p.rpm),
                            "x-ratelimit-remaining-requests": str(max(0, p.rpm - count)),
                            "x-ratelimit-reset-requests": f"{retry:.0f}s"})
        return headers

    async def spend_tokens(self, p: Principal, tokens: int, now: float | None = None) -> None:
        if p.tpm is not None and tokens > 0:
            minute, _ = _window(time.time() if now is None else now)
            await self.counters.incr(f"{p.key_id}:tok", tokens, minute)
