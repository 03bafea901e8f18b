"""The Redis Streams queue with real Redis and real worker processes (scripted model work)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest

from service.backends import GenParams, collect
from service.scheduler.redis_queue import RedisFront, keys

from .conftest import REDIS_URL, fake_expert
from .servers import CONCLAVE

pytestmark = pytest.mark.real


def start_worker(name: str, prefix: str, home, kind: str = "fake", log=None, **extra) -> subprocess.Popen:
    """``conclave worker`` in a subprocess (its log, one line per generated job, to the file ``log``;
    ``extra``: more environment, e.g. CONCLAVE_FAKE_CHUNK_S)."""
    env = {**os.environ, "CONCLAVE_REDIS_URL": REDIS_URL, "CONCLAVE_REDIS_PREFIX": prefix,
           "CONCLAVE_HOME": str(home), "CONCLAVE_SCHED_MAX_BATCH": "3", "CONCLAVE_FAKE_GEN_S": "0.3",
           "CONCLAVE_LLAMA_THREADS": "1", **extra}
    out = open(log, "a") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen([CONCLAVE, "worker", "--kind", kind, "--name", name, "--reclaim-ms", "1000"],
                                env=env, stdout=out, stderr=out)
    finally:
        if log:
            out.close()


def test_sigkill_of_a_worker_mid_batch_loses_nothing_and_answers_once(redis_prefix, tmp_path):
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    k = keys(redis_prefix)
    front = RedisFront(REDIS_URL, redis_prefix)
    experts = [fake_expert("a"), fake_expert("b")]
    a = start_worker("A", redis_prefix, tmp_path)
    procs = [a]

    async def main():
        asks = [asyncio.create_task(collect(front.stream(experts[i % 2], [{"role": "user", "content": f"q{i}"}],
                                                         GenParams(max_tokens=8, stream=False)))) for i in range(10)]
        # whole answers (a streamed one cut by the kill is an in-band error: test_queue_stream_real.py)
        deadline = time.monotonic() + 30
        while not list(r.scan_iter(k["done"] + "*")) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        a.send_signal(signal.SIGKILL)           # mid-batch: A has answered some jobs and holds the rest
        answered_by_a = len(list(r.scan_iter(k["done"] + "*")))
        procs.append(start_worker("B", redis_prefix, tmp_path))
        return answered_by_a, await asyncio.wait_for(asyncio.gather(*asks), 60)

    def drained() -> bool:   # a job A answered but never acknowledged is reclaimed by B, seen done, acked
        deadline = time.monotonic() + 15
        while r.xlen(k["jobs"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        return r.xlen(k["jobs"]) == 0 and r.xpending(k["jobs"], "workers")["pending"] == 0

    try:
        answered_by_a, gens = asyncio.run(main())
        queue_drained = drained()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [g.text for g in gens] == [f"{'ab'[i % 2]}: q{i}" for i in range(10)]
    done = [r.get(key).decode() for key in r.scan_iter(k["done"] + "*")]
    assert len(done) == 10 and 0 < answered_by_a < 10 and "B" in done
    assert not list(r.scan_iter(k["reply"] + "*"))           # no second answer left waiting anywhere
    assert queue_drained


def _dead_worker_took(r, k, job_id: str, expert) -> None:
    """A job enqueued and read by consumer A, which then died."""
    import json

    from service.scheduler.redis_queue import GROUP

    if not r.exists(k["jobs"]):
        r.xgroup_create(k["jobs"], GROUP, id="0", mkstream=True)
    r.xadd(k["jobs"], {"id": job_id, "expert": expert.to_json(), "params": json.dumps({"max_tokens": 4}),
                       "messages": json.dumps([{"role": "user", "content": "x"}])})
    r.xreadgroup(GROUP, "A", {k["jobs"]: ">"}, count=1)


def test_a_reclaimed_job_is_rerun_or_if_already_answered_only_acknowledged(redis_prefix):
    import redis

    from service.scheduler.policy import BatchPolicy
    from service.scheduler.redis_queue import answer_payload
    from service.scheduler.redis_worker import RedisWorkerLoop
    from service.workers.fake import FakeWorker

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    _dead_worker_took(r, k, "answered", fake_expert("a"))
    _dead_worker_took(r, k, "lost", fake_expert("a"))
    worker = FakeWorker()
    b = RedisWorkerLoop(REDIS_URL, redis_prefix, worker, BatchPolicy(), "B", reclaim_ms=1)
    payload = answer_payload([], RuntimeError("A's answer"))
    assert b._publish(keys=[k["done"] + "answered", k["reply"] + "answered"], args=["A", payload]) == 1
    assert b._publish(keys=[k["done"] + "answered", k["reply"] + "answered"], args=["A", payload]) == 0
    time.sleep(0.01)
    b._fetch(block_ms=0)                                  # XAUTOCLAIM takes both from the dead consumer
    b._serve(b.policy.next([], time.monotonic()))
    assert worker.events == [("load", "a"), ("batch", "a", 1)]   # only the lost job ran again
    assert r.llen(k["reply"] + "answered") == 1 and r.get(k["done"] + "answered") == b"A"
    assert r.llen(k["reply"] + "lost") == 1 and r.get(k["done"] + "lost") == b"B"
    assert r.xlen(k["jobs"]) == 0


def test_gateway_with_the_redis_queue_answers_through_a_worker_process(redis_prefix, fake_gateway, client_for,
                                                                          tmp_path):
    from service.backends import BackendPool

    settings = fake_gateway.settings.with_(sched_queue="redis", redis_url=REDIS_URL, redis_prefix=redis_prefix)
    fake_gateway.backends = BackendPool(settings)
    client = client_for(fake_gateway, expert_timeout=30.0)   # the deadline covers the worker's start-up
    w = start_worker("W", redis_prefix, tmp_path)
    try:
        r = client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hey"}]})
    finally:
        w.terminate()
        assert w.wait(10) == 0                            # SIGTERM: a clean stop
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hey"


def test_real_llamacpp_worker_process_serves_the_redis_queue(redis_prefix, tmp_path):
    from experts_registry.bundled import BUNDLED

    front = RedisFront(REDIS_URL, redis_prefix)
    w = start_worker("L", redis_prefix, tmp_path, kind="llamacpp")
    try:
        gen = asyncio.run(asyncio.wait_for(collect(front.stream(
            BUNDLED["smollm2"], [{"role": "user", "content": "Say hi."}], GenParams(max_tokens=4, temperature=0))), 60))
    finally:
        w.kill()
        w.wait()
    assert gen.text.strip() and gen.usage["completion_tokens"] > 0


def test_full_shared_queue_is_429_and_a_client_that_left_cancels_its_job(redis_prefix):
    import redis

    from experts_registry.errors import RateLimited

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    front = RedisFront(REDIS_URL, redis_prefix, queue_total=1)

    async def main():
        waiting = asyncio.create_task(collect(front.stream(fake_expert("a"), [{"role": "user", "content": "x"}],
                                                           GenParams())))
        await asyncio.sleep(0.3)                 # no worker runs: the job stays queued
        with pytest.raises(RateLimited, match="shared queue is full") as exc:
            await collect(front.stream(fake_expert("a"), [{"role": "user", "content": "y"}], GenParams()))
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return exc.value

    exc = asyncio.run(main())
    assert exc.retry_after >= 1
    assert len(list(r.scan_iter(k["cancel"] + "*"))) == 1     # a worker will skip the abandoned job


def test_a_worker_skips_a_job_whose_client_left(redis_prefix):
    import redis

    from service.scheduler.policy import BatchPolicy
    from service.scheduler.redis_worker import RedisWorkerLoop
    from service.workers.fake import FakeWorker

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    _dead_worker_took(r, k, "gone", fake_expert("a"))
    r.set(k["cancel"] + "gone", 1)
    worker = FakeWorker()
    b = RedisWorkerLoop(REDIS_URL, redis_prefix, worker, BatchPolicy(), "B", reclaim_ms=1)
    time.sleep(0.01)
    b._fetch(block_ms=0)
    b._serve(b.policy.next([], time.monotonic()))
    assert worker.events == [] and not r.exists(k["reply"] + "gone") and r.xlen(k["jobs"]) == 0
