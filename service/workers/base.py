"""The worker seam: something that hosts a few expert models and runs batches of jobs on them.

A worker holds at most ``max_models`` models at once, and (when ``memory_mb`` is
set) at most that many megabytes by the experts' ``memory_mb``.  All methods
block; the scheduler calls them from its own threads, never from the event loop.

    can_host(expert)          raise ExpertUnavailable if the expert can never fit
    loaded() -> [name]        the experts loaded now
    load(expert) -> seconds   load it (the caller made room first: see make_room)
    unload(name) -> seconds   unload it and return its memory
    generate(expert, batch)   run every Job of the batch on the loaded expert

Optional, for workers with tiers of readiness (vLLM sleep mode): ``tiers()`` (expert -> tier and
costs, reported in the heartbeat), ``switch_costs()`` (expert -> seconds to serve it from where it
is; the scheduler's switch cost) and ``prefetch(expert)`` (start moving it up one tier while a
batch runs).  The defaults report nothing and prefetch nothing.

``generate`` streams each job's tokens through ``job.emit``, reports a job's own
failure through ``job.fail`` and goes on with the next job; it skips jobs whose
``cancel`` flag is set.  The scheduler closes every job afterwards.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Callable

from experts_registry.errors import ExpertUnavailable
from experts_registry.model import Expert

from ..core.backend import Delta, GenParams

END = object()  # the sentinel a job's sink receives once, after its last Delta or error
_ids = itertools.count(1)


@dataclass
class Job:
    """One chat request waiting for an expert.  ``sink`` receives Deltas, then an exception or END;
    it must be thread-safe (the scheduler's sink posts into the request's asyncio queue)."""

    expert: str
    messages: list[dict]
    params: GenParams
    sink: Callable[[object], None]
    enqueued_at: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    id: int = field(default_factory=lambda: next(_ids))
    closed: bool = False

    def emit(self, delta: Delta) -> None:
        if not self.closed:
            self.sink(delta)

    def fail(self, exc: BaseException) -> None:
        if not self.closed:
            self.sink(exc)
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sink(END)


class Worker:
    """Base class: budget bookkeeping shared by every worker; subclasses do the real work."""

    def __init__(self, max_models: int = 1, memory_mb: int | None = None, name: str = "worker"):
        self.max_models = max(1, max_models)
        self.memory_mb = memory_mb
        self.name = name
        self.hosted: dict[str, Expert] = {}

    serves: tuple[str, ...] | None = None   # the expert backends this worker runs (None: any; the scripted one)

    def can_host(self, expert: Expert) -> None:
        if self.serves is not None and expert.backend not in self.serves:
            raise ExpertUnavailable(f"expert {expert.name!r} is a {expert.backend} expert; worker {self.name!r} "
                                    f"runs {', '.join(self.serves)}: start a `conclave worker --kind "
                                    f"{expert.backend}`", expert=expert.name)
        if self.memory_mb is not None and (expert.memory_mb or 0) > self.memory_mb:
            raise ExpertUnavailable(
                f"expert {expert.name!r} needs {expert.memory_mb} MB but worker {self.name!r} has a budget of "
                f"{self.memory_mb} MB: raise CONCLAVE_WORKER_MEMORY_MB or host it elsewhere", expert=expert.name)

    def loaded(self) -> list[str]:
        return list(self.hosted)

    def fits(self, expert: Expert) -> bool:
        if expert.name in self.hosted:
            return True
        if len(self.hosted) >= self.max_models:
            return False
        if self.memory_mb is None:
            return True
        used = sum(e.memory_mb or 0 for e in self.hosted.values())
        return used + (expert.memory_mb or 0) <= self.memory_mb

    def make_room(self, expert: Expert, order: list[str]) -> list[str]:
        """Unload experts, in ``order`` of preference (then any), until ``expert`` fits; return their names."""
        self.can_host(expert)
        victims = [n for n in order if n in self.hosted] + [n for n in self.hosted if n not in order]
        gone = []
        while not self.fits(expert) and victims:
            name = victims.pop(0)
            self.unload(name)
            gone.append(name)
        return gone

    def load(self, expert: Expert) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement load")

    def unload(self, name: str) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement unload")

    def generate(self, expert: Expert, batch: list[Job]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement generate")

    def tiers(self) -> dict[str, dict]:
        return {}

    def switch_costs(self) -> dict[str, float]:
        return {}

    def prefetch(self, expert: Expert) -> str | None:
        return None

    def close(self) -> None:
        for name in list(self.hosted):
            self.unload(name)
