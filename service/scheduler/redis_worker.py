"""A worker process serving the Redis Streams queue (see ``redis_queue``).

    python -m service.scheduler.redis_worker [--name NAME] [--kind llamacpp|vllm|fake] [--reclaim-ms 5000]

Settings come from the environment like the gateway's (CONCLAVE_REDIS_URL is required,
CONCLAVE_REDIS_PREFIX, CONCLAVE_SCHED_MAX_BATCH, CONCLAVE_SCHED_MAX_WAIT, CONCLAVE_MAX_LOADED_MODELS,
CONCLAVE_WORKER_MEMORY_MB).  ``--kind fake`` runs the scripted test worker.

Each job runs as an attempt of a ``TokenPublisher`` (``token_publish``): a streamed job's deltas go to
its token stream as they are generated, every job of the batch stops when its cancel or done key
appears, and the answer is published (exactly once) after the last delta was written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import signal
import threading
import time
from contextlib import suppress

from experts_registry.errors import ConfigError
from experts_registry.model import Expert

from ..core.redis_retry import Outage, is_redis_down
from ..workers.base import Job, Worker
from .local import serve_batch
from .policy import BatchPolicy, Pending, policy_from
from .redis_queue import GROUP, PUBLISH, answer_payload, keys, params_from
from .stats import SchedStats
from .token_publish import Run, TokenPublisher

log = logging.getLogger("conclave.worker")


class RedisWorkerLoop:
    def __init__(self, url: str, prefix: str, worker: Worker, policy: BatchPolicy, name: str,
                 reclaim_ms: int = 5000):
        import redis

        self.r = redis.Redis.from_url(url)
        self.keys, self.worker, self.policy, self.name = keys(prefix), worker, policy, name
        self.reclaim_ms = reclaim_ms
        self.held: dict[int, tuple[bytes, dict, Expert, list, object]] = {}  # seq -> (entry id, fields, ...)
        self.stats = SchedStats()
        self.stop = threading.Event()
        self.finished = threading.Event()   # set when run() returns: heartbeats go on while a stopping worker
                                            # finishes its batch (else its jobs, streams included, run again)
        self._seq = itertools.count(1)
        self._publish = self.r.register_script(PUBLISH)
        self._lock = threading.Lock()
        self.tokens = TokenPublisher(self.r, self.keys, name, reclaim_ms)
        self.runs: dict[int, Run] = {}   # seq -> the attempt at that job (its deltas, its token stream)

    def run(self) -> None:
        self._create_group()
        threading.Thread(target=self._heartbeat, daemon=True).start()
        outage = Outage(log, f"worker {self.name}")
        try:
            while not self.stop.is_set():
                try:
                    self._step()
                except Exception as exc:  # Redis went away: wait, reconnect, re-create what a restart lost
                    if not (is_redis_down(exc) or "NOGROUP" in str(exc)):
                        raise
                    self.stop.wait(outage.failed(exc))
                    with suppress(Exception):
                        self._create_group()
                    continue
                outage.recovered()
        finally:
            self.finished.set()
        self.worker.close()

    def _step(self) -> None:
        self._fetch(block_ms=self._block_ms())
        pick = self.policy.next(self.worker.loaded(), time.monotonic(), switch_s=self.worker.switch_costs())
        if pick is not None:
            try:
                self._serve(pick)
            except Exception:
                with self._lock:   # Redis went away mid-batch: XAUTOCLAIM hands back what it kept
                    for item in pick.items:
                        self.held.pop(item.id, None)
                raise
            finally:
                self.policy.done(pick.expert)

    def _create_group(self) -> None:
        try:
            self.r.xgroup_create(self.keys["jobs"], GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(exc):
                raise

    def _block_ms(self) -> int:
        """How long to wait for new jobs: not at all with work ready, until a held expert's reload
        gap ends (at most 0.5 s) with only held work, 0.5 s when idle."""
        if not self.policy.pending():
            return 500
        now = time.monotonic()
        wake = self.policy.wake_at(now)
        return 0 if wake is None else max(1, min(500, int((wake - now) * 1000)))

    def _fetch(self, block_ms: int) -> None:
        _, claimed, *_ = self.r.xautoclaim(self.keys["jobs"], GROUP, self.name, self.reclaim_ms, "0-0", count=50)
        fresh = self.r.xreadgroup(GROUP, self.name, {self.keys["jobs"]: ">"}, count=50, block=block_ms or None)
        entries = list(claimed) + [e for _, batch in (fresh or []) for e in batch]
        for entry_id, fields in entries:
            if entry_id in {h[0] for h in self.held.values()}:
                continue
            f = {k.decode(): v.decode() for k, v in fields.items()}
            expert = Expert.from_json(f["expert"])
            seq = next(self._seq)
            with self._lock:
                self.held[seq] = (entry_id, f, expert, json.loads(f["messages"]), params_from(f["params"]))
            self.policy.add(Pending(seq, expert.name, time.monotonic()))

    def _serve(self, pick) -> None:
        expert = self.held[pick.items[0].id][2]
        jobs = [self._job(item.id) for item in pick.items]
        try:
            serve_batch(self.worker, expert, [j for j in jobs if not j.cancel.is_set()],
                        self.policy.eviction_order(self.worker.loaded()), self.stats)
            for job in jobs:
                self._finish(job)
        finally:
            self._drop_runs(jobs)

    def _job(self, seq: int) -> Job:
        """The Job of a held entry, its deltas kept for the answer and, when it streams, published as they come;
        already cancelled if its client left or it was answered before."""
        _, fields, expert, messages, params = self.held[seq]
        run = self.tokens.open(fields["id"], params.stream)
        job = Job(expert.name, messages, params, run.sink, id=seq)
        self.runs[seq] = run
        if self.r.exists(self.keys["cancel"] + fields["id"], self.keys["done"] + fields["id"]):
            job.cancel.set()
        run.job = job   # from now on the publisher checks its cancel and done keys
        return job

    def _drop_runs(self, jobs: list[Job]) -> None:
        for job in jobs:   # the publisher forgets them (after a failure too, Redis away mid-batch)
            run = self.runs.pop(job.id, None)
            if run is not None:
                with suppress(Exception):
                    self.tokens.close(run, drop=job.cancel.is_set())

    def _finish(self, job: Job, stream_key: str | None = None) -> None:
        entry_id, fields = self.held[job.id][:2]
        if job.cancel.is_set():
            log.info("job %s withdrawn (its client left) or answered before: no answer", fields["id"])
            self.stats.count("cancelled")
        else:
            self._answer(fields, self.runs[job.id])
        key = stream_key or self.keys["jobs"]
        self.r.xack(key, GROUP, entry_id)
        self.r.xdel(key, entry_id)
        with self._lock:
            self.held.pop(job.id, None)

    def _answer(self, fields: dict, run: Run) -> None:
        """Publish a job's answer once every delta is in its token stream (exactly once: ``redis_queue``)."""
        job_id, rid = fields["id"], fields.get("request")
        sent = self.tokens.close(run)
        error = next((x for x in run.out if isinstance(x, BaseException)), None)
        kept = [self.keys["answer"] + job_id, self.keys["request"] + rid] if rid else []
        tokens = [self.keys["tokens"] + job_id, run.attempt, sent] if run.stream else []
        first = self._publish(keys=[self.keys["done"] + job_id, self.keys["reply"] + job_id, *kept],
                              args=[self.name, answer_payload([x for x in run.out if hasattr(x, "text")], error),
                                    fields.get("ttl", 3600), job_id, *tokens])
        log.info("generated job %s: %s", job_id, "answered" if first else "answered before, this answer dropped")

    def _heartbeat(self) -> None:
        """Keep the jobs this worker holds from looking abandoned (XCLAIM resets their idle time)."""
        while not self.finished.wait(self.reclaim_ms / 3000):
            with self._lock:
                ids = [h[0] for h in self.held.values()]
            if ids:
                with suppress(Exception):   # Redis away: the main loop reports and reconnects
                    self.r.xclaim(self.keys["jobs"], GROUP, self.name, 0, ids, justid=True)


def make_worker(kind: str, settings, name: str) -> Worker:
    if kind == "fake":
        from ..workers.fake import FakeWorker

        return FakeWorker(settings.max_loaded_models, settings.worker_memory_mb, name,
                          load_s=float(os.environ.get("CONCLAVE_FAKE_LOAD_S", "0")),
                          gen_s=float(os.environ.get("CONCLAVE_FAKE_GEN_S", "0.2")),
                          chunk_s=float(os.environ.get("CONCLAVE_FAKE_CHUNK_S", "0")))
    from ..workers import WORKERS

    return WORKERS[kind](settings, name)


def serve_worker(name: str, kind: str = "llamacpp", reclaim_ms: int = 5000) -> None:
    """Serve the Redis queue until SIGTERM (the batch in progress finishes first)."""
    from ..core.config import load_settings

    s = load_settings()
    if not s.redis_url:
        raise ConfigError("set CONCLAVE_REDIS_URL: a worker process serves the gateways' Redis queue")
    loop = RedisWorkerLoop(s.redis_url, s.redis_prefix, make_worker(kind, s, name),
                           policy_from(s), name, reclaim_ms)
    loop.r.ping()   # Redis must answer at start (one clean line from the CLI if not); later outages are waited out
    signal.signal(signal.SIGTERM, lambda *_: loop.stop.set())
    log.info("worker %s serving %s", name, loop.keys["jobs"])
    loop.run()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default=f"worker-{os.getpid()}")
    ap.add_argument("--kind", default="llamacpp", choices=["llamacpp", "vllm", "fake"])
    ap.add_argument("--reclaim-ms", type=int, default=5000)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    serve_worker(a.name, a.kind, a.reclaim_ms)


if __name__ == "__main__":
    main()
