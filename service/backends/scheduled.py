"""A backend whose requests go through the expert-batched scheduler to model-hosting workers."""

from __future__ import annotations

import asyncio

from experts_registry.model import Expert

from ..core.backend import GenParams
from ..core.config import Settings


class ScheduledBackend:
    def __init__(self, scheduler):
        self.scheduler = scheduler

    def stream(self, expert: Expert, messages: list[dict], params: GenParams):
        return self.scheduler.stream(expert, messages, params)

    def stats(self) -> dict:
        return self.scheduler.stats.snapshot()

    async def close(self) -> None:
        await asyncio.to_thread(self.scheduler.close)


def scheduled(kind: str, settings: Settings, policy: str = "batch") -> ScheduledBackend:
    """``settings.sched_workers`` workers of ``kind`` behind one in-process scheduler."""
    from ..scheduler.local import LocalScheduler
    from ..scheduler.policy import policy_from
    from ..workers import WORKERS

    workers = [WORKERS[kind](settings, f"{kind}-{i}") for i in range(settings.sched_workers)]
    return ScheduledBackend(LocalScheduler(
        workers, policy_from(settings, policy), queue_per_expert=settings.sched_queue_per_expert,
        queue_total=settings.sched_queue_total, admission=settings.sched_admission))
