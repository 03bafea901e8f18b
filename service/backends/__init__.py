"""Backends by kind (plain dict of factories) and the pool that builds them on first use.

An expert's kind is its record's ``backend``, except that OpenAI-compatible ``litellm`` experts go
to the lean ``openai`` client (``openai_backend.lean_eligible``) unless ``CONCLAVE_LEAN_CLIENT=0``.
The seam's types (``Backend``, ``Delta``, ``GenParams``) live in ``service/core/backend.py``.
May import scheduler, workers and core (never pipeline, http, cli).
"""

from __future__ import annotations

from typing import Callable

from experts_registry.errors import ExpertUnavailable
from experts_registry.model import Expert

from ..core.backend import Backend, Delta, GenParams, Generation, collect, usage_dict
from ..core.config import Settings
from .openai_backend import lean_eligible


def _llamacpp(s: Settings) -> Backend:
    if s.sched_queue == "redis":   # worker processes (`conclave worker`) serve the shared queue
        from ..scheduler.redis_queue import RedisFront

        return RedisFront(s.redis_url, s.redis_prefix, s.sched_queue_total, s.sched_answer_ttl)
    from .scheduled import scheduled

    return scheduled("llamacpp", s)   # one (or CONCLAVE_SCHED_WORKERS) in-process llama.cpp worker


def _litellm(s: Settings) -> Backend:
    from .litellm_backend import LiteLLMBackend

    return LiteLLMBackend(s.expert_timeout, s.allow_unsafe_upstreams)


def _openai(s: Settings) -> Backend:
    from .openai_backend import OpenAIBackend

    return OpenAIBackend(s.expert_timeout, s.allow_unsafe_upstreams)


def _vllm(s: Settings) -> Backend:
    from .scheduled import scheduled

    return scheduled("vllm", s)   # in-process vLLM engines (one per loaded model), expert-batched


BACKENDS: dict[str, Callable[[Settings], Backend]] = {"llamacpp": _llamacpp, "litellm": _litellm, "vllm": _vllm,
                                                     "openai": _openai}


def _refused(kind: str, fix: str) -> Callable[[Settings], Backend]:
    def factory(s: Settings) -> Backend:
        raise ExpertUnavailable(f"{kind} experts are not loaded by a gateway of several processes "
                                f"(conclave serve --workers N, each would load its own copy): {fix}")
    return factory


def shared_backends(s: Settings) -> dict[str, Callable[[Settings], Backend]]:
    """The factories of one of several server processes: no model is loaded in them (llama.cpp experts
    go through the Redis queue to ``conclave worker`` processes when it is on; vLLM ones never)."""
    made = dict(BACKENDS, vllm=_refused("vllm", "serve them from a gateway with --workers 1"))
    if s.sched_queue != "redis":
        made["llamacpp"] = _refused("llamacpp", "set CONCLAVE_SCHED_QUEUE=redis and run 'conclave worker' processes")
    return made


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

    def kind_for(self, expert: Expert) -> str:
        """Which backend serves ``expert``: the lean client for OpenAI-compatible litellm experts
        (when it is on and in this pool); with the Redis queue, its front for vllm experts too (a
        ``conclave worker --kind vllm`` serves them); else the record's own kind."""
        if self.settings.lean_client and "openai" in self.factories and lean_eligible(expert):
            return "openai"
        if expert.backend == "vllm" and self.settings.sched_queue == "redis":
            return "llamacpp"   # the Redis queue's one front carries both; `conclave worker --kind` picks
        return expert.backend

    def for_expert(self, expert: Expert) -> Backend:
        return self.get(self.kind_for(expert))

    def stats(self) -> dict[str, dict]:
        """Scheduler snapshots of the backends built so far that run behind a scheduler."""
        return {kind: b.stats() for kind, b in self._made.items() if hasattr(b, "stats")}

    async def close(self) -> None:
        for backend in self._made.values():
            await backend.close()
        self._made.clear()


__all__ = ["BACKENDS", "shared_backends", "Backend", "BackendPool", "Delta", "GenParams", "Generation", "collect",
           "usage_dict"]
