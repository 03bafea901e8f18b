"""Worker loops that take part in the cluster's placement table (see ``placement``).

``AffinityWorkerLoop`` (``CONCLAVE_SCHED_CLUSTER=affinity``, the default) moves new jobs from the
intake stream to per-expert streams, reads the cluster view, asks ``AffinityPolicy`` what to do,
claims an expert atomically before loading it, and reads jobs only from the streams of experts it
serves.  ``SharedWorkerLoop`` (``=shared``) is the first version (every worker reads the one shared
stream into its own ``BatchPolicy``), registered in the table too so ``conclave workers`` and the
benchmark see both the same way.  Both stream tokens and publish answers as ``redis_worker`` does
(token streams, exactly-once script) and reclaim a dead worker's jobs after ``reclaim_ms``.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import suppress

from experts_registry.errors import ConclaveError

from ..core.redis_retry import Outage, is_redis_down
from ..workers.base import Job, Worker
from .affinity import AffinityPolicy, Choice
from .local import serve_batch
from .placement import GROUP, Placement, queue_key
from .redis_queue import params_from
from .redis_worker import RedisWorkerLoop

log = logging.getLogger("conclave.worker")
POLL_S = 0.02     # an idle worker looks at the queues this often


def _ensure_group(r, key: str) -> None:
    try:
        r.xgroup_create(key, GROUP, id="0", mkstream=True)
    except Exception as exc:  # BUSYGROUP: it exists already
        if "BUSYGROUP" not in str(exc):
            raise


class _Registered:
    """Registration and a heartbeat that also publishes the worker's stats and holdings."""

    kind = "unknown"

    def _register(self) -> None:
        self.placement = Placement(self.r, self.prefix, self.name, self.reclaim_ms)
        self.placement.register(self.kind, self.worker.max_models, self.worker.memory_mb)
        self.placement.beat(self.stats.snapshot(), self.worker.loaded(), self.worker.tiers())

    def _beat_loop(self) -> None:
        while not self.finished.wait(min(1.0, self.reclaim_ms / 3000)):
            try:
                self.placement.beat(self.stats.snapshot(), self.worker.loaded(), self.worker.tiers())
            except Exception as exc:  # a missed beat is retried; a worker never dies of its heartbeat
                if not is_redis_down(exc):           # an outage is logged once by the main loop
                    log.exception("heartbeat of %s failed", self.name)


class SharedWorkerLoop(_Registered, RedisWorkerLoop):
    """Today's loop (one shared stream), registered so its holdings and loads can be listed."""

    def __init__(self, url, prefix, worker, policy, name, reclaim_ms=5000, kind="fake"):
        super().__init__(url, prefix, worker, policy, name, reclaim_ms)
        self.prefix, self.kind = prefix, kind

    def run(self) -> None:
        self._register()
        threading.Thread(target=self._beat_loop, daemon=True).start()
        try:
            super().run()
        finally:
            self.placement.leave(self.worker.loaded())


class AffinityWorkerLoop(_Registered, RedisWorkerLoop):
    def __init__(self, url: str, prefix: str, worker: Worker, policy: AffinityPolicy, name: str,
                 reclaim_ms: int = 5000, kind: str = "fake"):
        from .policy import BatchPolicy

        super().__init__(url, prefix, worker, BatchPolicy(policy.max_batch, policy.max_wait), name, reclaim_ms)
        self.affinity, self.prefix, self.kind = policy, prefix, kind
        self.streams: dict[int, str] = {}    # seq -> the stream its entry lives in
        self._experts: dict = {}

    def run(self) -> None:
        _ensure_group(self.r, self.keys["jobs"])
        self._register()
        threading.Thread(target=self._beat_loop, daemon=True).start()
        threading.Thread(target=self._heartbeat, daemon=True).start()
        outage = Outage(log, f"worker {self.name}")
        try:
            while not self.stop.is_set():
                try:
                    busy = self.step()
                except Exception as exc:  # Redis went away: wait, reconnect, re-create what a restart lost
                    if not (is_redis_down(exc) or "NOGROUP" in str(exc)):
                        raise
                    self.stop.wait(outage.failed(exc))
                    with suppress(Exception):
                        _ensure_group(self.r, self.keys["jobs"])
                        self._register()
                    continue
                outage.recovered()
                if not busy:
                    self.stop.wait(POLL_S)
        finally:
            self.finished.set()
            with suppress(Exception):
                self.placement.leave(self.worker.loaded())
            self.worker.close()

    def step(self) -> bool:
        """One decision: serve or load-and-serve one batch (True), or nothing to do now (False)."""
        self.placement.intake(self.keys["jobs"])
        view = self.placement.view()
        gen_s, load_s = self.stats.means()
        choices = self.affinity.decide(view, self.name, self.worker.loaded(), self.worker.max_models,
                                       gen_s or 0.0, load_s, self._can_host, self.worker.switch_costs())
        for i, choice in enumerate(choices):
            if choice.load and not self.placement.claim(choice.expert, choice.replica,
                                                        len(view.holders.get(choice.expert, {}))):
                continue
            if choice.load:
                log.info("worker %s loads %s (%s%s)", self.name, choice.expert, choice.reason,
                         ", replica" if choice.replica else "")
            self._prefetch(choices[i + 1:])
            if self._serve_choice(choice, view.now):
                return True
            if choice.load:
                self.placement.release(choice.expert)
        return False

    def _prefetch(self, later: list[Choice]) -> None:
        """While this batch runs, move the next expert this worker would load up one tier (see prefetch)."""
        nxt = next((c for c in later if c.load), None)
        expert = self._expert(nxt.expert) if nxt else None
        if expert is not None:
            with suppress(Exception):   # a prefetch is an optimisation: never a reason to fail a batch
                move = self.worker.prefetch(expert)
                if move:
                    log.info("worker %s prefetches %s (-> %s)", self.name, expert.name, move)

    def _can_host(self, name: str) -> bool:
        expert = self._expert(name)
        if expert is None:
            return False
        try:
            self.worker.can_host(expert)
        except ConclaveError:
            return False
        return True

    def _expert(self, name: str):
        if name not in self._experts:
            self._experts[name] = self.placement.expert(name)
        return self._experts[name]

    def _take(self, expert: str) -> list[tuple[bytes, dict]]:
        """Up to max_batch entries of ``expert``'s stream: a dead worker's first (XAUTOCLAIM), then new ones."""
        key, n = queue_key(self.prefix, expert), self.affinity.max_batch
        _, claimed, *_ = self.r.xautoclaim(key, GROUP, self.name, self.reclaim_ms, "0-0", count=n)
        held = {h[0] for h in self.held.values()}
        entries = [e for e in claimed if e[0] not in held]
        if len(entries) < n:
            fresh = self.r.xreadgroup(GROUP, self.name, {key: ">"}, count=n - len(entries))
            entries += [e for _, batch in (fresh or []) for e in batch]
        return entries

    def _serve_choice(self, choice: Choice, now: float) -> bool:
        expert = self._expert(choice.expert)
        entries = self._take(choice.expert) if expert is not None else []
        if not entries:
            return False
        key, jobs = queue_key(self.prefix, choice.expert), []
        for entry_id, fields in entries:
            f = {k.decode(): v.decode() for k, v in fields.items()}
            seq = next(self._seq)
            with self._lock:
                self.held[seq] = (entry_id, f, expert, json.loads(f["messages"]), params_from(f["params"]))
                self.streams[seq] = key
            self.stats.waited(choice.expert, max(0.0, now - int(f.get("at", 0)) / 1000))
            jobs.append(self._job(seq))
        before = self.worker.loaded()
        order = list(choice.evict) + [e for e in before if e not in choice.evict]
        try:
            serve_batch(self.worker, expert, [j for j in jobs if not j.cancel.is_set()], order, self.stats)
            after = self.worker.loaded()
            self.placement.sync(after, [e for e in before if e not in after])
            for job in jobs:
                self._finish(job, key)
        finally:
            self._drop_runs(jobs)
        return True

    def _finish(self, job: Job, stream_key: str | None = None) -> None:
        super()._finish(job, stream_key)
        with self._lock:
            self.streams.pop(job.id, None)

    def _heartbeat(self) -> None:
        """Keep the jobs this worker holds from looking abandoned (XCLAIM resets their idle time)."""
        while not self.finished.wait(self.reclaim_ms / 3000):
            with self._lock:
                by_stream: dict[str, list] = {}
                for seq, h in self.held.items():
                    by_stream.setdefault(self.streams[seq], []).append(h[0])
            for key, ids in by_stream.items():
                with suppress(Exception):   # Redis away: the main loop reports and reconnects
                    self.r.xclaim(key, GROUP, self.name, 0, ids, justid=True)


def make_loop(settings, worker: Worker, name: str, kind: str, reclaim_ms: int):
    """The loop ``CONCLAVE_SCHED_CLUSTER`` selects (affinity by default, shared: the first version)."""
    from .policy import policy_from

    if settings.sched_cluster == "shared":
        return SharedWorkerLoop(settings.redis_url, settings.redis_prefix, worker, policy_from(settings), name,
                                reclaim_ms, kind)
    policy = AffinityPolicy(settings.sched_max_batch, settings.sched_max_wait, settings.sched_replica_fraction)
    return AffinityWorkerLoop(settings.redis_url, settings.redis_prefix, worker, policy, name, reclaim_ms, kind)


def serve_cluster_worker(name: str, kind: str = "llamacpp", reclaim_ms: int = 5000) -> None:
    """Serve the Redis queue as one worker of the cluster until SIGTERM (the batch in progress finishes)."""
    import signal

    from experts_registry.errors import ConfigError

    from ..core.config import load_settings
    from .redis_worker import make_worker

    s = load_settings()
    if not s.redis_url:
        raise ConfigError("set CONCLAVE_REDIS_URL: a worker process serves the gateways' Redis queue")
    loop = make_loop(s, make_worker(kind, s, name), name, kind, reclaim_ms)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop.set())
    log.info("worker %s serving %s (%s)", name, loop.keys["jobs"], s.sched_cluster)
    loop.run()
