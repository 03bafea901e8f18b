"""Cluster scheduling: the affinity decision (pure), the placement table in real Redis, and real
worker processes (SIGKILL mid-batch, `conclave workers --json`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from service.scheduler.affinity import AffinityPolicy, ClusterView, Queue

from .conftest import REDIS_URL, fake_expert


def q(pending: int, oldest: float = 0.0, last: float = 0.0, arrived: int = 0) -> Queue:
    return Queue(pending, oldest, last, arrived or pending)


def test_a_worker_serves_what_it_holds_before_loading_anything():
    pol = AffinityPolicy(max_batch=4, max_wait=30)
    view = ClusterView(10.0, {"a": q(2, 9.0, 9.5), "b": q(9, 1.0, 9.0)})
    first = pol.decide(view, "w1", ["a"], gen_s=0.1, load_s=1)[0]
    assert (first.expert, first.load, first.reason) == ("a", False, "held")


def test_a_switch_goes_to_an_expert_nobody_holds_by_score():
    pol = AffinityPolicy(max_batch=4, max_wait=30)
    view = ClusterView(10.0, {"a": q(8, 1.0), "b": q(3, 2.0), "c": q(1, 0.0)}, holders={"a": {"w2": "loaded"}})
    choices = pol.decide(view, "w1", [], gen_s=0.1, load_s=1)
    assert [c.expert for c in choices] == ["b", "c"] and all(c.load and not c.replica for c in choices)


def test_a_warm_expert_is_kept_until_it_is_cold_or_the_candidate_is_urgent():
    pol = AffinityPolicy(max_batch=4, max_wait=30)
    for t in range(10):   # "a" gets ten requests a second
        pol.observe(ClusterView(float(t), {"a": q(0, t, t, arrived=10 * t + 1)}))
    busy = ClusterView(10.0, {"a": q(0, 10.0, 9.95, 101), "b": q(2, 5.0, 6.0)})
    assert pol.decide(busy, "w1", ["a"], gen_s=0.1, load_s=1) == []             # a is still busy: keep it
    cold = ClusterView(12.0, {"a": q(0, 10.0, 9.95, 101), "b": q(2, 5.0, 6.0)})   # no arrival for 2 s = 20 gaps
    assert [(c.expert, c.reason, c.evict) for c in pol.decide(cold, "w1", ["a"], gen_s=0.1, load_s=1)] == \
        [("b", "cold", ("a",))]
    urgent = ClusterView(26.0, {"a": q(0, 10.0, 25.99, 260), "b": q(2, 0.0, 6.0)})   # b: 26 s > 0.9 * 30 - 1 - 0.8
    assert [c.reason for c in pol.decide(urgent, "w1", ["a"], gen_s=0.1, load_s=1)] == ["urgent"]


def test_an_overdue_expert_goes_first_and_a_hot_one_gets_a_replica():
    pol = AffinityPolicy(max_batch=4, max_wait=30, replica_fraction=0.5)
    view = ClusterView(40.0, {"a": q(3, 39.0), "b": q(1, 5.0)})
    assert pol.decide(view, "w1", ["a"], max_models=2)[0].expert == "b"        # overdue beats held work
    hot = ClusterView(40.0, {"a": q(200, 39.0)}, holders={"a": {"w2": "loaded"}})
    choice = pol.decide(hot, "w1", [], gen_s=0.1)[0]                          # 200 * 0.1 s > 0.5 * 30 s
    assert (choice.expert, choice.load, choice.replica) == ("a", True, True)
    assert pol.decide(ClusterView(40.0, {"a": q(100, 39.0)}, holders={"a": {"w2": "loaded"}}), "w1", [],
                      gen_s=0.1) == []                                         # 10 s of work: its holder copes


def test_an_expert_the_worker_cannot_host_is_never_chosen():
    pol = AffinityPolicy()
    view = ClusterView(10.0, {"big": q(5, 0.0)})
    assert pol.decide(view, "w1", [], can_host=lambda e: e != "big") == []


# -- real Redis ---------------------------------------------------------------------------------

def _placement(prefix: str, name: str, ttl_ms: int = 5000):
    import redis

    from service.scheduler.placement import Placement

    p = Placement(redis.Redis.from_url(REDIS_URL), prefix, name, ttl_ms)
    p.register("fake", 1, 100)
    return p


@pytest.mark.real
def test_two_workers_never_claim_one_expert_unless_a_replica_is_wanted(redis_prefix):
    a, b = _placement(redis_prefix, "A"), _placement(redis_prefix, "B", ttl_ms=300)
    assert b.claim("e", replica=False, holders_now=0)
    assert not a.claim("e", replica=False, holders_now=0)
    assert a.claim("e", replica=True, holders_now=1)                        # a second copy, on purpose
    assert not _placement(redis_prefix, "C").claim("e", replica=True, holders_now=1)   # not a third
    time.sleep(0.4)                                                          # B stops heart-beating
    c = _placement(redis_prefix, "C")
    assert c.claim("e", replica=True, holders_now=1)                         # B's copy left the table
    assert set(c.r.hkeys(c.base + "holders:e")) == {b"A", b"C"}


@pytest.mark.real
def test_an_expert_no_live_worker_can_host_is_503_at_enqueue_but_waits_with_no_worker(redis_prefix):
    from experts_registry.errors import ExpertUnavailable
    from service.backends import GenParams, collect
    from service.scheduler.redis_queue import RedisFront

    front, big = RedisFront(REDIS_URL, redis_prefix), fake_expert("big", memory_mb=1000)

    async def ask():
        return await collect(front.stream(big, [{"role": "user", "content": "x"}], GenParams()))

    async def waits() -> bool:
        task = asyncio.create_task(ask())
        await asyncio.sleep(0.3)
        alive = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return alive

    assert asyncio.run(waits())                        # no live worker: the job waits for one
    _placement(redis_prefix, "small")                  # a live worker with 100 MB
    with pytest.raises(ExpertUnavailable, match="none of the 1 live workers can host it"):
        asyncio.run(ask())


@pytest.mark.real
def test_a_vllm_expert_with_only_llamacpp_workers_live_is_503_naming_the_worker_kind(redis_prefix):
    from experts_registry.errors import ExpertUnavailable
    from experts_registry.model import Expert
    from service.backends import GenParams, collect
    from service.scheduler.redis_queue import RedisFront

    _placement(redis_prefix, "llama").register("llamacpp", 1, None)
    front = RedisFront(REDIS_URL, redis_prefix)
    vllm = Expert(name="v", backend="vllm", model="bundled:smollm2")
    with pytest.raises(ExpertUnavailable, match="none of the 1 live workers runs vllm experts: start `conclave "
                                                "worker --kind vllm`"):
        asyncio.run(collect(front.stream(vllm, [{"role": "user", "content": "x"}], GenParams())))


# -- real processes -----------------------------------------------------------------------------

def start(name: str, prefix: str, home, **env) -> subprocess.Popen:
    full = {**os.environ, "PYTHONPATH": os.getcwd(), "CONCLAVE_REDIS_URL": REDIS_URL, "CONCLAVE_REDIS_PREFIX": prefix,
            "CONCLAVE_HOME": str(home), "CONCLAVE_SCHED_MAX_BATCH": "3", "CONCLAVE_FAKE_GEN_S": "0.2",
            "CONCLAVE_FAKE_LOAD_S": "0.2", "CONCLAVE_MAX_LOADED_MODELS": "1", **env}
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--kind", "fake", "--name", name,
                             "--reclaim-ms", "1000"], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def workers_json(prefix: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "service.cli", "workers", "--json"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd(), "CONCLAVE_REDIS_URL": REDIS_URL,
                              "CONCLAVE_REDIS_PREFIX": prefix}, check=True)
    return json.loads(out.stdout)


@pytest.mark.real
def test_sigkill_of_an_affinity_worker_mid_batch_answers_everything_once_and_moves_its_experts(redis_prefix,
                                                                                                 tmp_path):
    import redis

    from service.backends import GenParams, collect
    from service.scheduler.placement import base_of
    from service.scheduler.redis_queue import RedisFront, keys

    r, k, base = redis.Redis.from_url(REDIS_URL), keys(redis_prefix), base_of(redis_prefix)
    front = RedisFront(REDIS_URL, redis_prefix)
    a = start("A", redis_prefix, tmp_path)
    procs = [a]

    async def main():
        asks = [asyncio.create_task(collect(front.stream(fake_expert("x"), [{"role": "user", "content": f"q{i}"}],
                                                         GenParams(max_tokens=8, stream=False)))) for i in range(12)]
        # whole answers (a streamed one cut by the kill is an in-band error: test_queue_stream_real.py)
        deadline = time.monotonic() + 30
        while not list(r.scan_iter(k["done"] + "*")) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert r.hget(base + "holders:x", "A") is not None                   # A holds x ...
        a.send_signal(signal.SIGKILL)                                        # ... and dies mid-batch
        answered_by_a = len(list(r.scan_iter(k["done"] + "*")))
        procs.append(start("B", redis_prefix, tmp_path))
        return answered_by_a, await asyncio.wait_for(asyncio.gather(*asks), 60)

    try:
        answered_by_a, gens = asyncio.run(main())
        report = workers_json(redis_prefix)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [g.text for g in gens] == [f"x: q{i}" for i in range(12)]
    done = [r.get(key).decode() for key in r.scan_iter(k["done"] + "*")]
    assert len(done) == 12 and 0 < answered_by_a < 12 and "B" in done
    assert not list(r.scan_iter(k["reply"] + "*"))                           # no second answer anywhere
    assert report["placement"]["x"]["holders"] == {"B": "loaded"}            # x moved to B, A left the table
    by_name = {w["name"]: w for w in report["workers"]}
    assert not by_name["A"]["alive"] and by_name["B"]["alive"] and by_name["B"]["loads"] == {"x": 1}
    assert r.xlen(base + "q:x") == 0 and r.xlen(k["jobs"]) == 0


@pytest.mark.real
def test_workers_spread_experts_and_the_report_counts_every_load(redis_prefix, tmp_path):
    from service.backends import GenParams, collect
    from service.scheduler.redis_queue import RedisFront

    front = RedisFront(REDIS_URL, redis_prefix)
    procs = [start(n, redis_prefix, tmp_path, CONCLAVE_FAKE_GEN_S="0.01") for n in ("A", "B")]

    async def main():
        return await asyncio.wait_for(asyncio.gather(*[
            collect(front.stream(fake_expert("ab"[i % 2]), [{"role": "user", "content": f"q{i}"}], GenParams()))
            for i in range(20)]), 60)

    try:
        gens = asyncio.run(main())
        time.sleep(1.2)                                                      # one heartbeat publishes the stats
        report = workers_json(redis_prefix)
    finally:
        for p in procs:
            p.terminate()
            assert p.wait(10) == 0
    assert [g.text for g in gens] == [f"{'ab'[i % 2]}: q{i}" for i in range(20)]
    loads = [w["loads"] for w in report["workers"]]
    assert report["loads_total"] == sum(sum(x.values()) for x in loads) >= 2
    assert sum(w["jobs"] for w in report["workers"]) == 20
