"""The worker side of token streaming (``token_stream`` has the keys and the gateway side).

``TokenPublisher`` runs one thread per worker process.  A job's sink hands its deltas to it (a list
append under a lock: the generating thread never waits for Redis); the thread writes them as entries of
the job's token stream, one pipeline for every job with news: the first delta of a job at once (time to
first token), later ones at most every ``every_s`` (20 ms), so a fast engine's tokens take at most
50 pipelines a second for all its jobs together (plus one per job's first token), not one per token.  The same pipelines renew each streaming attempt's lease and, for
every job of the batch, check its cancel and done keys every ``check_s`` (100 ms): a client that left
(or an answer already published by another attempt) stops the generation at its next token.  A failed
write keeps the deltas and is retried with the same ``n`` (the gateway skips what it already has);
``close`` writes what is left from the caller's thread before the answer is published.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from ..core.backend import Delta
from ..workers.base import Job
from .token_stream import TOKENS_TTL_S, delta_json

log = logging.getLogger("conclave.worker")


@dataclass
class Run:
    """One attempt at one job: everything it emitted (``out``: deltas, then an error or END), its deltas
    not yet written, how many were written, its flags."""
    job_id: str
    attempt: str
    stream: bool
    publisher: "TokenPublisher | None" = None
    job: Job | None = None
    out: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    sent: int = 0
    busy: bool = False          # the thread is writing it now
    closing: bool = False
    checked: float = 0.0        # last cancel check (monotonic)
    leased: float = 0.0         # last lease renewal

    def sink(self, item) -> None:   # called by the worker, any thread
        self.out.append(item)
        if self.stream and isinstance(item, Delta):
            self.publisher._add(self, item)


class TokenPublisher:
    def __init__(self, r, keys: dict, name: str, lease_ms: int = 5000, every_s: float = 0.02,
                 check_s: float = 0.1):
        self.r, self.keys, self.name, self.lease_ms = r, keys, name, lease_ms
        self.every_s, self.check_s = every_s, check_s
        self.runs: dict[str, Run] = {}
        self.flushes = 0           # pipelines written (for benchmarks)
        self._cond = threading.Condition()
        self._tag = uuid.uuid4().hex[:6]
        self._count = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._last = 0.0

    def open(self, job_id: str, stream: bool) -> Run:
        """A new attempt at ``job_id``; give ``run.sink`` to its Job and set ``run.job``."""
        run = Run(job_id, f"{self.name}#{self._tag}-{next(self._count)}", stream, self)
        with self._cond:
            self.runs[job_id] = run
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="token-publisher", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return run

    def close(self, run: Run, drop: bool = False) -> int:
        """Write what is left of ``run`` (unless ``drop``: a cancelled job; raises if Redis is away) and
        forget it; the deltas sent."""
        with self._cond:
            run.closing = True
            while run.busy:
                self._cond.wait()
            self.runs.pop(run.job_id, None)
            rest = [] if drop else list(run.pending)
            run.pending.clear()
        if rest:
            p = self.r.pipeline(transaction=False)
            self._write(p, run, rest)
            p.execute()
            run.sent += len(rest)
        return run.sent

    def _add(self, run: Run, delta: Delta) -> None:
        with self._cond:
            run.pending.append(delta)
            if len(run.pending) == 1:   # the thread may be asleep until a cancel check: due in every_s at most
                self._cond.notify_all()

    # -- the thread ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                work = self._due(time.monotonic())
                while work is None:
                    self._cond.wait(self._sleep(time.monotonic()))
                    work = self._due(time.monotonic())
                writes, checks = work
                for run, _ in writes:
                    run.busy = True
            try:
                self._flush(writes, checks)
            except Exception as exc:   # Redis away: keep the deltas, try again (the gateway skips repeats)
                log.warning("worker %s could not publish tokens: %s", self.name, exc)
                time.sleep(0.5)
            finally:
                with self._cond:
                    for run, _ in writes:
                        run.busy = False
                    self._cond.notify_all()

    def _due(self, now: float):
        """(runs to write with how many deltas, runs to check) or None when nothing is due yet."""
        runs = [r for r in self.runs.values() if not r.closing]
        soon = now - self._last >= self.every_s
        writes = [(r, len(r.pending)) for r in runs if r.pending and (soon or r.sent == 0)]
        writes += [(r, 0) for r in runs if r.stream and r.sent and not r.pending
                   and now - r.leased >= self.lease_ms / 3000]
        checks = [r for r in runs if r.job is not None and now - r.checked >= self.check_s]
        return (writes, checks) if writes or checks else None

    def _sleep(self, now: float) -> float:
        runs = [r for r in self.runs.values() if not r.closing]
        wake = [r.checked + self.check_s for r in runs] + [r.leased + self.lease_ms / 3000 for r in runs if r.sent]
        if any(r.pending for r in runs):
            wake.append(self._last + self.every_s)
        return max(0.001, min(wake) - now) if wake else 1.0

    def _flush(self, writes: list, checks: list) -> None:
        now = time.monotonic()
        p = self.r.pipeline(transaction=False)
        for run, k in writes:
            self._write(p, run, run.pending[:k])
        for run in checks:
            p.exists(self.keys["cancel"] + run.job_id, self.keys["done"] + run.job_id)
        results = p.execute()
        self.flushes += 1
        with self._cond:
            self._last = now
            for run, k in writes:
                del run.pending[:k]
                run.sent += k
                run.leased = now
            for run, stop in zip(checks, results[len(results) - len(checks):]):
                run.checked = now
                if stop and not run.job.cancel.is_set():
                    log.info("job %s stops mid-generation: its client left or it was answered", run.job_id)
                    run.job.cancel.set()

    def _write(self, p, run: Run, deltas: list) -> None:
        key = self.keys["tokens"] + run.job_id
        if deltas:
            p.xadd(key, {"a": run.attempt, "n": run.sent,
                         "d": json.dumps([delta_json(d) for d in deltas], separators=(",", ":"))})
            p.expire(key, TOKENS_TTL_S)
        p.set(self.keys["lease"] + run.job_id, run.attempt, px=self.lease_ms)
