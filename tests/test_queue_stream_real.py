"""Streaming through the Redis queue with real processes: `conclave serve` (CONCLAVE_SCHED_QUEUE=redis)
and `conclave worker` (the scripted fake, then llama.cpp), raw SSE and the official `openai` client."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest

from .conftest import REDIS_URL
from .servers import start_gateway
from .test_scheduler_redis import start_worker

pytestmark = pytest.mark.real
CHAT = "/v1/chat/completions"
WORDS = " ".join(f"w{i}" for i in range(40))
SLOW = {"CONCLAVE_FAKE_GEN_S": "0", "CONCLAVE_FAKE_CHUNK_S": "0.1"}   # 40 words: about 4 s per answer


def _env(prefix: str) -> dict:
    return {"CONCLAVE_REDIS_URL": REDIS_URL, "CONCLAVE_REDIS_PREFIX": prefix, "CONCLAVE_SCHED_QUEUE": "redis"}


def _wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stream_until_first_word(base: str, then, headers: dict | None = None) -> list[str]:
    """Raw SSE: read up to the first content chunk, call ``then()``, read the rest; the data lines."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": WORDS}], "stream": True}
    events: list[str] = []
    with httpx.stream("POST", base + CHAT, json=body, headers=headers or {}, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if line != "data: [DONE]" and "content" in line and json.loads(line[6:])["choices"][0]["delta"].get(
                    "content") and then is not None:
                if then() == "leave":
                    return events
                then = None
    return events


def _text(events: list[str]) -> str:
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def test_leaving_stops_the_job_and_sigkill_mid_stream_is_an_in_band_error_without_done(redis_prefix, tmp_path):
    import redis
    from openai import APIError, OpenAI

    from service.scheduler.redis_queue import keys

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    logs = {n: tmp_path / f"{n}.log" for n in "ABC"}
    procs: list[subprocess.Popen] = []
    try:
        g, base = start_gateway(tmp_path / "h", tmp_path / "g.log", **_env(redis_prefix))
        procs.append(g)
        procs.append(a := start_worker("A", redis_prefix, tmp_path, log=logs["A"], **SLOW))

        left = _stream_until_first_word(base, lambda: "leave")           # 1. the client leaves mid-stream
        _wait_for(lambda: "stops mid-generation" in logs["A"].read_text(), "the job to stop")
        _wait_for(lambda: "withdrawn" in logs["A"].read_text(), "the job to be acknowledged")
        assert _text(left) == "smollm2:" and not list(r.scan_iter(k["done"] + "*"))

        killed = _stream_until_first_word(base, lambda: a.send_signal(signal.SIGKILL))   # 2. the worker dies
        error = json.loads(killed[-1])["error"]
        assert "[DONE]" not in killed and error["code"] == "worker_lost" and "send the request again" in error[
            "message"]
        assert ("smollm2: " + WORDS).startswith(_text(killed)) and len(_text(killed)) < len("smollm2: " + WORDS)

        procs.append(b := start_worker("B", redis_prefix, tmp_path, log=logs["B"], **SLOW))   # 3. a keyed request
        client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        key, got = {"Idempotency-Key": "stream-1"}, []
        messages = [{"role": "user", "content": WORDS}]
        with pytest.raises(APIError, match="same Idempotency-Key"):
            for chunk in client.chat.completions.create(model="smollm2", messages=messages, stream=True,
                                                        extra_headers=key):
                got.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
                if "".join(got) and b.poll() is None:
                    b.send_signal(signal.SIGKILL)
        procs.append(start_worker("C", redis_prefix, tmp_path, log=logs["C"], **SLOW))
        again = client.chat.completions.create(model="smollm2", messages=messages, stream=True, extra_headers=key)
        assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == "smollm2: " + WORDS
    finally:
        for p in procs:
            p.kill()
            p.wait()
    generated = {n: [ln for ln in log.read_text().splitlines() if "generated job" in ln] for n, log in logs.items()}
    assert generated["A"] == [] and generated["B"] == [] and len(generated["C"]) == 1   # the keyed job, once
    assert "withdrawn" in logs["B"].read_text() + logs["C"].read_text()   # the unkeyed job A died on: skipped


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_with_a_second_worker_ready_a_stopped_one_finishes_and_a_killed_ones_job_is_not_spliced(sig, redis_prefix,
                                                                                                 tmp_path):
    import redis

    from service.scheduler.placement import base_of

    r, holders = redis.Redis.from_url(REDIS_URL), base_of(redis_prefix) + "holders:smollm2"
    logs = {n: tmp_path / f"{n}.log" for n in "AB"}
    procs: dict[str, subprocess.Popen] = {}
    stopped: list[str] = []

    def stop_the_one_streaming():   # the other worker is alive and takes over a job left behind
        (name,) = [n.decode() for n in r.hkeys(holders)]
        procs[name].send_signal(sig)
        stopped.append(name)

    try:
        procs["g"], base = start_gateway(tmp_path / "h", tmp_path / "g.log", **_env(redis_prefix))
        for n in "AB":   # no reload gap, a short wait bound: a job left behind is taken over at once
            procs[n] = start_worker(n, redis_prefix, tmp_path, log=logs[n], CONCLAVE_SCHED_RELOAD_GAP="0",
                                    CONCLAVE_SCHED_MAX_WAIT="1", **SLOW)
        events = _stream_until_first_word(base, stop_the_one_streaming)
        other = "B" if stopped == ["A"] else "A"
        if sig == signal.SIGKILL:   # the other worker runs the job again, sees it withdrawn, stops
            _wait_for(lambda: "withdrawn" in logs[other].read_text(), "the job to be withdrawn")
        else:
            assert procs[stopped[0]].wait(30) == 0
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    if sig == signal.SIGTERM:
        assert events[-1] == "[DONE]" and _text(events) == "smollm2: " + WORDS
        assert "generated job" in logs[stopped[0]].read_text() and "generated job" not in logs[other].read_text()
    else:
        assert "[DONE]" not in events and json.loads(events[-1])["error"]["code"] == "worker_lost"
        assert "generated job" not in logs[other].read_text()


def test_a_llamacpp_worker_streams_a_bundled_experts_answer_chunk_by_chunk(redis_prefix, tmp_path):
    from openai import OpenAI

    procs: list[subprocess.Popen] = []
    try:
        g, base = start_gateway(tmp_path / "h", tmp_path / "g.log", **_env(redis_prefix))
        procs += [g, start_worker("L", redis_prefix, tmp_path, kind="llamacpp", log=tmp_path / "l.log")]
        client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        ask = {"model": "smollm2", "messages": [{"role": "user", "content": "Tell me about the sea."}],
               "max_tokens": 24, "temperature": 0}
        chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
        whole = client.chat.completions.create(**ask)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 3 and "".join(content) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 24
