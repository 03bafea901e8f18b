"""The in-process scheduler: an asyncio front over worker threads driven by the policy.

``stream(expert, messages, params)`` enqueues a Job and yields its Deltas.  Each worker has a
thread that asks the policy for its next pick, makes room and loads the expert if needed, and
runs the batch.  A request whose client leaves is withdrawn from its queue (or, once picked,
skipped or stopped at the next token through its cancel flag).  Queues are bounded per expert
and overall: a full queue raises ``RateLimited`` (429 with Retry-After), never a silent drop.
With ``admission="bound"`` a request is also refused when the measured work queued ahead of it
would keep it past the wait bound (``BatchPolicy.admit``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import AsyncIterator, Callable

from experts_registry.errors import ConclaveError, RateLimited, UpstreamError
from experts_registry.model import Expert

from ..core.backend import Delta, GenParams
from ..workers.base import END, Job, Worker
from .policy import BatchPolicy, Pending, Pick
from .stats import SchedStats

log = logging.getLogger("conclave.scheduler")


class LocalScheduler:
    def __init__(self, workers: list[Worker], policy: BatchPolicy | None = None, *, queue_per_expert: int = 64,
                 queue_total: int = 256, clock: Callable[[], float] = time.monotonic, admission: str = "queue"):
        if not workers:
            raise ValueError("a scheduler needs at least one worker")
        self.workers = workers
        self.policy = policy or BatchPolicy()
        self.queue_per_expert, self.queue_total = queue_per_expert, queue_total
        self.admission = admission
        self.clock = clock
        self.stats = SchedStats()
        self._cond = threading.Condition()
        self._experts: dict[str, Expert] = {}
        self._waiting: dict[int, tuple[Job, Pending]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # -- the asyncio front -------------------------------------------------
    async def stream(self, expert: Expert, messages: list[dict], params: GenParams) -> AsyncIterator[Delta]:
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        job = self.submit(expert, messages, params, _sink(loop, queue))
        try:
            while True:
                item = await queue.get()
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel.set()
            self.withdraw(job)

    def submit(self, expert: Expert, messages: list[dict], params: GenParams, sink) -> Job:
        """Queue a job (any thread); raises ExpertUnavailable or RateLimited instead of queueing."""
        self._check_hostable(expert)
        with self._cond:
            self._check_bounds(expert)
            job = Job(expert.name, messages, params, sink, enqueued_at=self.clock())
            item = Pending(job.id, expert.name, job.enqueued_at)
            self._experts[expert.name] = expert
            self._waiting[job.id] = (job, item)
            self.policy.add(item)
            self._start()
            self._cond.notify_all()
        return job

    def withdraw(self, job: Job) -> None:
        with self._cond:
            entry = self._waiting.pop(job.id, None)
            if entry is not None and self.policy.remove(entry[1]):
                self.stats.count("cancelled")

    def _check_hostable(self, expert: Expert) -> None:
        errors = []
        for w in self.workers:
            try:
                return w.can_host(expert)
            except ConclaveError as exc:
                errors.append(exc)
        raise errors[0]

    def _check_bounds(self, expert: Expert) -> None:
        if self.policy.pending(expert.name) >= self.queue_per_expert:
            what = f"the queue of expert {expert.name!r} is full ({self.queue_per_expert} waiting; " \
                   "CONCLAVE_SCHED_QUEUE_PER_EXPERT)"
        elif self.policy.pending() >= self.queue_total:
            what = f"the gateway's queue is full ({self.queue_total} waiting; CONCLAVE_SCHED_QUEUE_TOTAL)"
        elif (late := self._past_bound(expert)) is not None:
            self.stats.count("rejected")
            raise RateLimited(f"the work queued for this gateway's workers would keep the request past the wait "
                              f"bound ({self.policy.max_wait:g} s, CONCLAVE_SCHED_MAX_WAIT): retry after the "
                              "Retry-After delay", retry_after=min(60.0, max(1.0, late)))
        else:
            return
        self.stats.count("rejected")
        raise RateLimited(f"{what}: retry after the Retry-After delay", retry_after=self._retry_after())

    def _past_bound(self, expert: Expert) -> float | None:
        """Seconds the queue is beyond the wait bound (admission "bound"), from measured means."""
        if self.admission != "bound":
            return None
        gen_s, load_s = self.stats.means()
        loaded = {name for w in self.workers for name in w.loaded()}
        return self.policy.admit(expert.name, self.clock(), loaded, gen_s, load_s, len(self.workers))

    def _idle_wait(self) -> float | None:
        """How long an idle worker may sleep: until a held expert becomes eligible (or a notify)."""
        now = self.clock()
        wake = self.policy.wake_at(now)
        return None if wake is None else max(0.001, wake - now)

    def _retry_after(self) -> float:
        per_job = self.stats.per_job()
        per_job = 1.0 if per_job is None else per_job
        return min(60.0, max(1.0, per_job * self.policy.pending() / len(self.workers)))

    # -- the worker threads ------------------------------------------------
    def _start(self) -> None:
        if not self._threads:
            for i, w in enumerate(self.workers):
                t = threading.Thread(target=self._run, args=(w, i), name=f"sched-{w.name}", daemon=True)
                t.start()
                self._threads.append(t)

    def _next(self, worker: Worker, index: int) -> Pick | None:
        return self.policy.next(worker.loaded(), self.clock(), index, worker.switch_costs())

    def _run(self, worker: Worker, index: int) -> None:
        while True:
            with self._cond:
                pick = None
                while not self._stopping and (pick := self._next(worker, index)) is None:
                    self._cond.wait(self._idle_wait())
                if self._stopping:
                    return
                jobs = [self._waiting.pop(p.id)[0] for p in pick.items]
                expert = self._experts[pick.expert]
                order = self.policy.eviction_order(worker.loaded())
            try:
                self._serve(worker, expert, pick, jobs, order)
            finally:
                with self._cond:
                    self.policy.done(pick.expert)
                    self._cond.notify_all()

    def _serve(self, worker: Worker, expert: Expert, pick: Pick, jobs: list[Job], order: list[str]) -> None:
        now = self.clock()
        for item in pick.items:
            self.stats.waited(item.expert, now - item.at)
        try:
            serve_batch(worker, expert, [j for j in jobs if not j.cancel.is_set()], order, self.stats)
        finally:
            for j in jobs:
                j.close()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            waiting = [job for job, _ in self._waiting.values()]
            self._waiting.clear()
            self._cond.notify_all()
        for job in waiting:
            job.fail(UpstreamError("the gateway is shutting down: retry the request", expert=job.expert))
        for t in self._threads:
            t.join(timeout=30)
        for w in self.workers:
            w.close()


def serve_batch(worker: Worker, expert: Expert, live: list[Job], order: list[str], stats: SchedStats) -> None:
    """Make room, load ``expert`` if needed, run the batch; every failure is reported to the jobs."""
    if not live:
        return
    try:
        if expert.name not in worker.loaded():
            t0 = time.perf_counter()
            gone = worker.make_room(expert, order)
            stats.unloaded(len(gone), time.perf_counter() - t0, gone)
            stats.loaded(expert.name, worker.load(expert))
        t0 = time.perf_counter()
        worker.generate(expert, live)
        stats.generated(len(live), time.perf_counter() - t0)
    except ConclaveError as exc:
        for j in live:
            j.fail(exc)
    except Exception as exc:  # a worker bug must still answer every waiting request
        log.exception("worker %s failed on %s", worker.name, expert.name)
        for j in live:
            j.fail(UpstreamError(f"expert {expert.name!r} failed on worker {worker.name}: {exc}",
                                 expert=expert.name))


def _sink(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            pass
    return put
