"""Offline batch mode (Symbolic-MoE's schedule): given every (expert, job) pair up front, group
the jobs by expert, load each expert once, run its jobs in batches of ``max_batch``, unload,
next expert.  Uses the same worker code as the online scheduler."""

from __future__ import annotations

import time

from experts_registry.errors import ConclaveError, UpstreamError
from experts_registry.model import Expert

from ..workers.base import Job, Worker
from .policy import Pending, group_by_expert
from .stats import SchedStats


def run_offline(worker: Worker, pairs: list[tuple[Expert, Job]], max_batch: int = 64) -> dict:
    """Run every job; every job is closed (answered or failed).  Returns the stats snapshot."""
    stats = SchedStats()
    experts = {e.name: e for e, _ in pairs}
    jobs = {j.id: j for _, j in pairs}
    for e in experts.values():
        worker.can_host(e)
    groups = group_by_expert([Pending(j.id, e.name, 0.0) for e, j in pairs])
    for name, items in groups:
        batch = [jobs[i.id] for i in items]
        try:
            _run_expert(worker, experts[name], batch, max_batch, stats)
        except ConclaveError as exc:
            for j in batch:
                j.fail(exc)
        except Exception as exc:  # every job gets an answer, even on a worker bug
            for j in batch:
                j.fail(UpstreamError(f"expert {name!r} failed: {exc}", expert=name))
        finally:
            for j in batch:
                j.close()
    for name in worker.loaded():
        stats.unloaded(1, worker.unload(name))
    return stats.snapshot()


def _run_expert(worker: Worker, expert: Expert, batch: list[Job], max_batch: int, stats: SchedStats) -> None:
    t0 = time.perf_counter()
    gone = worker.make_room(expert, [])
    stats.unloaded(len(gone), time.perf_counter() - t0)
    if expert.name not in worker.loaded():
        stats.loaded(expert.name, worker.load(expert))
    for i in range(0, len(batch), max_batch):
        part = batch[i:i + max_batch]
        t0 = time.perf_counter()
        worker.generate(expert, part)
        stats.generated(len(part), time.perf_counter() - t0)
