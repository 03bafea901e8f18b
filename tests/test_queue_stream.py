"""Token streaming through the Redis queue: the attempt follower (pure), the publisher and the gateway
side with real Redis and an in-process worker loop driven step by step, then real processes
(`conclave serve`, `conclave worker`) SIGKILLed mid-stream, and a llama.cpp worker streaming to the
official `openai` client."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from experts_registry.errors import UpstreamError
from service.core.backend import Delta, GenParams
from service.scheduler.token_stream import Follower, delta_json

from .conftest import REDIS_URL, fake_expert


def entry(attempt: str, n: int, *texts: str) -> dict:
    return {b"a": attempt.encode(), b"n": str(n).encode(),
            b"d": json.dumps([delta_json(Delta(t)) for t in texts]).encode()}


def end(attempt: str, n: int, answer: dict) -> dict:
    return {"a": attempt, "n": str(n), "e": json.dumps(answer)}


ANSWER = {"text": "a b", "finish_reason": "stop", "usage": {}}


def test_the_follower_hands_on_one_attempt_in_order_and_skips_what_a_rewrite_repeats():
    f = Follower("x", kept=False)
    assert [d.text for d in f.take("1-0", entry("w#1-1", 0, "a"))[0]] == ["a"]
    assert [d.text for d in f.take("2-0", entry("w#1-1", 0, "a", " b"))[0]] == [" b"]   # a write retried
    assert f.take("3-0", end("w#1-1", 2, ANSWER)) == ([], ANSWER)
    assert f.last == "3-0" and f.next == 2


def test_a_new_attempt_is_followed_only_while_nothing_was_handed_on():
    f = Follower("x", kept=False)
    assert f.take("1-0", end("w#1-1", 0, ANSWER))[1] == ANSWER   # a run that streamed nothing: its answer
    g = Follower("x", kept=True)
    g.take("1-0", entry("a#1-1", 0, "a"))
    with pytest.raises(UpstreamError, match=r"\(a\) stopped mid-answer.*same Idempotency-Key") as exc:
        g.take("2-0", entry("b#1-1", 0, "z"))
    assert exc.value.code == "worker_lost"
    h = Follower("x", kept=False)
    h.take("1-0", entry("a#1-1", 0, "a"))
    with pytest.raises(UpstreamError, match="pieces 1-1 never arrived.*send the request again"):
        h.take("2-0", entry("a#1-1", 2, "c"))
    with pytest.raises(UpstreamError, match="3 pieces were published, 1 arrived"):
        h.take("3-0", end("a#1-1", 3, ANSWER))


def test_tool_calls_and_logprobs_travel_in_entries_and_in_a_whole_answer():
    from service.scheduler.redis_queue import _deltas, answer_payload
    from service.scheduler.token_stream import delta_of

    call = [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]
    more = [{"index": 0, "function": {"arguments": ": 1}"}}]
    lp = [{"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}]
    pieces = [Delta("", tool_calls=call), Delta("", tool_calls=more, logprobs=lp), Delta("", "tool_calls", {"t": 1})]
    assert [delta_of(json.loads(json.dumps(delta_json(d)))) for d in pieces] == pieces
    whole = _deltas(json.loads(answer_payload(pieces, None)))
    assert whole[0].tool_calls == [{"index": 0, "id": "c1", "type": "function",
                                    "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert whole[0].logprobs == lp and whole[1] == Delta("", "tool_calls", {"t": 1})


# -- real Redis, an in-process worker loop ---------------------------------------------------------

class Loop:
    """A RedisWorkerLoop over a scripted FakeWorker in a thread; each word after the first waits for ``step``."""

    def __init__(self, prefix: str, **fake):
        from service.scheduler.policy import BatchPolicy
        from service.scheduler.redis_worker import RedisWorkerLoop
        from service.workers.fake import FakeWorker

        self.worker = FakeWorker(**fake)
        self.worker.step = threading.Semaphore(0)
        self.loop = RedisWorkerLoop(REDIS_URL, prefix, self.worker, BatchPolicy(max_wait=0.01), "L", reclaim_ms=2000)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.loop.stop.set()
        for _ in range(100):
            self.worker.step.release()
        self.thread.join(10)


def _wait(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.real
def test_each_chunk_reaches_the_gateway_while_the_job_is_still_generating(redis_prefix):
    import redis

    from service.scheduler.redis_queue import RedisFront, keys

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    front = RedisFront(REDIS_URL, redis_prefix)
    seen: list[tuple[str, bool]] = []

    async def main(loop: Loop):
        it = front.stream(fake_expert("x"), [{"role": "user", "content": "one two three"}], GenParams()).__aiter__()
        for _ in range(3):               # "x:", " one", " two": the worker holds the next word back until
            delta = await asyncio.wait_for(anext(it), 20)   # this side has seen this one
            seen.append((delta.text, bool(list(r.scan_iter(k["done"] + "*")))))
            loop.worker.step.release()
        return [d async for d in it]

    with Loop(redis_prefix) as loop:
        rest = asyncio.run(main(loop))
    assert seen == [("x:", False), (" one", False), (" two", False)]   # each one before the job ended
    assert [(d.text, d.finish_reason, (d.usage or {}).get("completion_tokens")) for d in rest] == [
        (" three", None, None), ("", "stop", 4)]
    assert len(list(r.scan_iter(k["done"] + "*"))) == 1
    assert not list(r.scan_iter(k["tokens"] + "*")) and not list(r.scan_iter(k["reply"] + "*"))   # cleaned up


@pytest.mark.real
def test_a_client_that_leaves_mid_stream_stops_the_generation(redis_prefix):
    import redis

    from service.scheduler.redis_queue import RedisFront, keys

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    front = RedisFront(REDIS_URL, redis_prefix)
    words = " ".join(f"w{i}" for i in range(50))

    async def leave():
        it = front.stream(fake_expert("x"), [{"role": "user", "content": words}], GenParams()).__aiter__()
        first = await asyncio.wait_for(anext(it), 20)
        await it.aclose()            # what the HTTP layer does when the client disconnects
        return first

    with Loop(redis_prefix) as loop:
        assert asyncio.run(leave()).text == "x:"
        assert len(list(r.scan_iter(k["cancel"] + "*"))) == 1
        runs = loop.loop.runs        # the publisher sees the cancel key while the worker is mid-answer ...
        _wait(lambda: any(run.job and run.job.cancel.is_set() for run in list(runs.values())), "the cancel to be seen")
        loop.worker.step.release()   # ... and the worker stops at its next word
        _wait(lambda: any(e[0] == "stopped" for e in loop.worker.events), "the job to stop")
        _wait(lambda: r.xlen(k["jobs"]) == 0, "the job to be acknowledged")
        stopped_at = next(e[2] for e in loop.worker.events if e[0] == "stopped")
    assert stopped_at == 1 and not list(r.scan_iter(k["done"] + "*"))   # stopped mid-answer, never answered


@pytest.mark.real
def test_a_whole_answer_still_waits_on_the_reply_and_a_busy_stream_is_batched(redis_prefix):
    import redis

    from service.backends import collect
    from service.scheduler.redis_queue import RedisFront, keys
    from service.scheduler.token_publish import TokenPublisher
    from service.workers.base import Job

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    front = RedisFront(REDIS_URL, redis_prefix)
    with Loop(redis_prefix) as loop:
        for _ in range(10):
            loop.worker.step.release()
        gen = asyncio.run(asyncio.wait_for(collect(front.stream(
            fake_expert("x"), [{"role": "user", "content": "a b"}], GenParams(stream=False))), 20))
    assert gen.text == "x: a b" and not list(r.scan_iter(k["tokens"] + "*"))   # no token stream when not asked

    pub = TokenPublisher(r, k, "P", every_s=0.05)
    run = pub.open("busy", stream=True)
    run.job = Job("x", [], GenParams(), run.sink)
    for i in range(200):             # far faster than the flush interval: few pipelines carry them all
        run.job.emit(Delta(f"{i} "))
    sent = pub.close(run)
    entries = r.xrange(k["tokens"] + "busy")
    follow = Follower("x", kept=False)
    text = "".join(d.text for e_id, f in entries for d in follow.take(e_id, f)[0])
    assert sent == 200 and text == "".join(f"{i} " for i in range(200))
    assert len(entries) < 20 and pub.flushes < 20


class _LostReply:
    """A real Redis client whose first pipeline that writes tokens is applied but answers with a
    connection error (the reply lost on the way back), so the publisher writes those deltas again."""

    def __init__(self, r):
        self.r, self.failed = r, False

    def pipeline(self, **kw):
        outer, real = self, self.r.pipeline(**kw)
        execute = real.execute

        def flaky():
            import redis

            writes = any(args[0] == "XADD" for args, _ in real.command_stack)
            result = execute()
            if writes and not outer.failed:
                outer.failed = True
                raise redis.ConnectionError("reply lost")
            return result
        real.execute = flaky
        return real


@pytest.mark.real
def test_a_write_repeated_after_a_lost_reply_reaches_the_client_once(redis_prefix):
    import redis

    from service.scheduler.redis_queue import keys
    from service.scheduler.token_publish import TokenPublisher
    from service.workers.base import Job

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    flaky = _LostReply(r)
    pub = TokenPublisher(flaky, k, "P")
    run = pub.open("j", stream=True)
    run.job = Job("x", [], GenParams(), run.sink)
    run.job.emit(Delta("a"))
    _wait(lambda: flaky.failed, "the first write")
    run.job.emit(Delta(" b"))
    _wait(lambda: run.sent == 2, "the rewrite of both")
    run.job.emit(Delta(" c"))
    assert pub.close(run) == 3
    entries = r.xrange(k["tokens"] + "j")
    follow = Follower("x", kept=False)
    text = "".join(d.text for e_id, f in entries for d in follow.take(e_id, f)[0])
    assert text == "a b c" and [int(f[b"n"]) for _, f in entries][:2] == [0, 0]   # written twice, taken once
