"""Backends by kind (plain dict of factories) and the pool that builds them on first use."""

from __future__ import annotations

from typing import Callable

from experts_registry.errors import ExpertUnavailable

from ..config import Settings
from .base import Backend, Delta, GenParams, Generation, collect, usage_dict


def _llamacpp(s: Settings) -> Backend:
    if s.sched_queue == "redis":   # worker processes (`conclave worker`) serve the shared queue
        from ..scheduler.redis_queue import RedisFront

        return RedisFront(s.redis_url, s.redis_prefix, s.sched_queue_total)
    from .scheduled import scheduled

    return scheduled("llamacpp", s)   # one (or CONCLAVE_SCHED_WORKERS) in-process llama.cpp worker


def _litellm(s: Settings) -> Backend:
    from .litellm_backend import LiteLLMBackend

    return LiteLLMBackend(s.expert_timeout)


def _vllm(s: Settings) -> Backend:
    from .scheduled import scheduled

    return scheduled("vllm", s)   # in-process vLLM engines (one per loaded model), expert-batched


BACKENDS: dict[str, Callable[[Settings], Backend]] = {"llamacpp": _llamacpp, "litellm": _litellm, "vllm": _vllm}


class BackendPool:
    def __init__(self, settings: Settings, factories: dict[str, Callable[[Settings], Backend]] | None = None):
        self.settings = settings
        self.factories = dict(BACKENDS if factories is None else factories)
        self._made: dict[str, Backend] = {}

    def get(self, kind: str) -> Backend:
        if kind not in self._made:
            if kind not in self.factories:
                raise ExpertUnavailable(f"backend {kind!r} is not available in this gateway "
                                        f"(available: {', '.join(sorted(self.factories))})")
            self._made[kind] = self.factories[kind](self.settings)
        return self._made[kind]

    def stats(self) -> dict[str, dict]:
        """Scheduler snapshots of the backends built so far that run behind a scheduler."""
        return {kind: b.stats() for kind, b in self._made.items() if hasattr(b, "stats")}

    async def close(self) -> None:
        for backend in self._made.values():
            await backend.close()
        self._made.clear()


__all__ = ["BACKENDS", "Backend", "BackendPool", "Delta", "GenParams", "Generation", "collect", "usage_dict"]
