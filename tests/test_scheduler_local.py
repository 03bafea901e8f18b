"""The in-process scheduler over scripted workers: batching, bounds, cancellation, failures."""

from __future__ import annotations

import asyncio
import time

import pytest

from experts_registry.errors import ExpertUnavailable, RateLimited
from experts_registry.model import Expert
from service.backends import BackendPool, GenParams, collect
from service.backends.scheduled import ScheduledBackend
from service.scheduler.local import LocalScheduler
from service.scheduler.policy import BatchPolicy, FcfsPolicy
from service.workers.fake import FakeWorker

from .conftest import fake_expert

EXPERTS = {n: fake_expert(n) for n in ("a", "b", "c")}


def ask(sched, name, text="hi"):
    return collect(sched.stream(EXPERTS.get(name) or fake_expert(name), [{"role": "user", "content": text}],
                                GenParams(max_tokens=8)))


async def burst(sched, worker, names):
    """Hold the worker on a first request, queue ``names`` behind it, then release it."""
    worker.gate.clear()
    first = asyncio.create_task(ask(sched, "a", "first"))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(ask(sched, n, f"q{i}")) for i, n in enumerate(names)]
    await asyncio.sleep(0.05)
    worker.gate.set()
    return await first, await asyncio.gather(*rest)


def test_queued_requests_are_grouped_by_expert_one_load_each():
    async def main():
        w = FakeWorker(max_models=1)
        s = LocalScheduler([w], BatchPolicy(max_batch=16, max_wait=60))
        first, rest = await burst(s, w, list("abcabcabcabc"))
        s.close()
        return w, s, first, rest
    w, s, first, rest = asyncio.run(main())
    assert first.text == "a: first"
    assert [g.text for g in rest] == [f"{n}: q{i}" for i, n in enumerate("abcabcabcabc")]
    assert w.loads() == ["a", "b", "c"]
    assert s.stats.snapshot()["batch_sizes"] == {1: 1, 4: 3}


def test_fcfs_policy_on_the_same_worker_switches_per_request():
    async def main():
        w = FakeWorker(max_models=1)
        s = LocalScheduler([w], FcfsPolicy(max_batch=16, max_wait=60))
        await burst(s, w, list("abcabc"))
        s.close()
        return w
    assert asyncio.run(main()).loads() == ["a", "b", "c", "a", "b", "c"]


def test_full_queue_is_rate_limited_with_retry_after_never_dropped():
    async def main():
        w = FakeWorker(max_models=1)
        s = LocalScheduler([w], queue_per_expert=2, queue_total=3)
        w.gate.clear()
        running = asyncio.create_task(ask(s, "a", "running"))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(ask(s, n)) for n in ("b", "b", "c")]
        await asyncio.sleep(0.05)
        with pytest.raises(RateLimited, match="queue of expert 'b' is full") as per_expert:
            await ask(s, "b")
        with pytest.raises(RateLimited, match="gateway's queue is full") as total:
            await ask(s, "a")
        w.gate.set()
        done = await asyncio.gather(running, *queued)
        s.close()
        return per_expert.value, total.value, done, s.stats.snapshot()
    per_expert, total, done, snap = asyncio.run(main())
    assert per_expert.retry_after >= 1 and total.retry_after >= 1
    assert [g.text for g in done] == ["a: running", "b: hi", "b: hi", "c: hi"]
    assert snap["rejected"] == 2


def test_a_request_whose_client_left_leaves_the_queue():
    async def main():
        w = FakeWorker(max_models=1)
        s = LocalScheduler([w])
        w.gate.clear()
        running = asyncio.create_task(ask(s, "a"))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(ask(s, "b"))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0.05)
        w.gate.set()
        await running
        s.close()
        return w, s.stats.snapshot()
    w, snap = asyncio.run(main())
    assert w.loads() == ["a"]          # b was never loaded: its only request left
    assert snap["cancelled"] == 1


def test_expert_too_large_for_the_worker_budget_is_refused_clearly():
    async def main():
        s = LocalScheduler([FakeWorker(max_models=2, memory_mb=500)])
        big = Expert(name="big", backend="llamacpp", model="fake:echo", memory_mb=4000)
        with pytest.raises(ExpertUnavailable, match="needs 4000 MB .* budget of 500 MB.*CONCLAVE_WORKER_MEMORY_MB"):
            await collect(s.stream(big, [{"role": "user", "content": "x"}], GenParams()))
        s.close()
    asyncio.run(main())


def test_memory_budget_unloads_until_the_next_expert_fits():
    async def main():
        w = FakeWorker(max_models=3, memory_mb=500)
        s = LocalScheduler([w], BatchPolicy(max_batch=4, max_wait=60))
        for name, mb in (("x", 300), ("y", 150), ("z", 300)):
            EXPERTS[name] = Expert(name=name, backend="llamacpp", model="fake:echo", memory_mb=mb)
            await ask(s, name)
        s.close()
        return w
    w = asyncio.run(main())
    assert w.events[:5] == [("load", "x"), ("batch", "x", 1), ("load", "y"), ("batch", "y", 1), ("unload", "x")]
    assert sorted(w.hosted) == []       # closed: everything unloaded


def test_a_failed_load_answers_every_request_of_the_batch_with_the_error():
    async def main():
        s = LocalScheduler([FakeWorker()])
        EXPERTS["broken"] = fake_expert("broken", "fail-load")
        results = await asyncio.gather(*[ask(s, "broken") for _ in range(3)], ask(s, "a"), return_exceptions=True)
        s.close()
        return results
    *failed, ok = asyncio.run(main())
    assert all(isinstance(r, ExpertUnavailable) and "scripted" in r.message for r in failed)
    assert ok.text == "a: hi"


def test_two_workers_share_the_queue():
    async def main():
        w1, w2 = FakeWorker(name="w1", gen_s=0.02), FakeWorker(name="w2", gen_s=0.02)
        s = LocalScheduler([w1, w2], BatchPolicy(max_batch=2, max_wait=60))
        out = await asyncio.gather(*[ask(s, n) for n in "aabb" * 3])
        s.close()
        return w1, w2, out
    w1, w2, out = asyncio.run(main())
    assert len(out) == 12 and w1.loads() and w2.loads()
    assert sorted(w1.loads() + w2.loads()) == ["a", "b"]     # neither expert was loaded twice


def test_the_pool_exports_scheduler_metrics(fake_gateway, client_for):
    w = FakeWorker()
    fake_gateway.backends = BackendPool(fake_gateway.settings,
                                        {"llamacpp": lambda s: ScheduledBackend(LocalScheduler([w]))})
    client = client_for(fake_gateway)
    r = client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hey"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hey"
    text = client.get("/metrics").text
    assert 'conclave_scheduler_loads_total{expert="echo",kind="llamacpp"} 1.0' in text
    assert 'conclave_scheduler_queue_wait_seconds{expert="echo",kind="llamacpp",quantile="0.99"}' in text


def test_http_429_with_retry_after_when_the_queue_is_full(fake_gateway, client_for):
    w = FakeWorker()
    w.gate.clear()
    sched = LocalScheduler([w], queue_per_expert=1, queue_total=1)
    fake_gateway.backends = BackendPool(fake_gateway.settings, {"llamacpp": lambda s: ScheduledBackend(sched)})
    client = client_for(fake_gateway)
    for _ in range(2):   # one picked by the held worker, one waiting: the queue is full
        sched.submit(EXPERTS["a"], [{"role": "user", "content": "x"}], GenParams(), lambda item: None)
        time.sleep(0.05)
    r = client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hey"}]})
    w.gate.set()
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limited"


def test_reload_gap_holds_a_lone_request_then_a_timed_wake_serves_it():
    async def main():
        w = FakeWorker(max_models=1)
        s = LocalScheduler([w], BatchPolicy(max_batch=4, max_wait=5, reload_gap=0.4))
        await ask(s, "a")
        await ask(s, "b")                                   # a is swapped out for b
        t0 = time.monotonic()
        again = await ask(s, "a", "again")                  # a was loaded < 0.4 s ago: held, then woken
        held = time.monotonic() - t0
        s.close()
        return w, again, held
    w, again, held = asyncio.run(main())
    assert again.text == "a: again"
    assert w.loads() == ["a", "b", "a"]
    assert held >= 0.2                                      # it waited for the gap (no notify woke it)


def test_admission_bound_refuses_work_the_queue_would_keep_past_the_wait_bound():
    async def main():
        w = FakeWorker(max_models=1, gen_s=0.3)
        s = LocalScheduler([w], BatchPolicy(max_batch=8, max_wait=1.0), admission="bound")
        await ask(s, "a")                                   # measures ~0.3 s per request
        w.gate.clear()
        running = asyncio.create_task(ask(s, "a", "running"))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(ask(s, "a", f"q{i}")) for i in range(2)]   # 0.3 and 0.6 s ahead
        await asyncio.sleep(0.05)
        with pytest.raises(RateLimited, match="past the wait bound") as refused:
            await ask(s, "a", "one too many")               # 3 x 0.3 s = 0.9 s > 0.8 x the 1 s bound
        w.gate.set()
        done = await asyncio.gather(running, *queued)
        s.close()
        return refused.value, done, s.stats.snapshot()
    refused, done, snap = asyncio.run(main())
    assert refused.retry_after >= 1
    assert [g.text for g in done] == ["a: running", "a: q0", "a: q1"]
    assert snap["rejected"] == 1
