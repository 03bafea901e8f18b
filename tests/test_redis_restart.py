"""Idempotency-Key and the Redis queue: queued requests survive a gateway restart and are answered once.

Unit tests for the key and the body check; then real Redis, real `conclave serve` processes SIGTERMed
with requests queued, and real `conclave worker` processes (the scripted fake; one test with llama.cpp).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import httpx
import pytest

from experts_registry.errors import InvalidRequest, ValidationFailed
from service.core.idempotency import check_same_body, ticket_for
from service.core.protocol import ChatRequest

from .conftest import REDIS_URL
from .servers import start_gateway
from .test_scheduler_redis import start_worker

CHAT = "/v1/chat/completions"
BODY = {"model": "echo", "messages": [{"role": "user", "content": "one"}]}


def _key(value: str) -> dict:
    return {"Idempotency-Key": value}


def _req(**changes) -> ChatRequest:
    return ChatRequest(**{**BODY, **changes})


def test_a_ticket_is_scoped_per_api_key_and_ignores_only_the_stream_fields():
    mine = ticket_for(_key("order-42"), "ck_alice", _req())
    assert ticket_for({}, "ck_alice", _req()) is None
    assert mine == ticket_for(_key("order-42"), "ck_alice", _req(stream=True, stream_options={"include_usage": True}))
    assert len(mine.rid) == 32 and "order-42" not in mine.rid
    assert ticket_for(_key("order-42"), "ck_bob", _req()).rid != mine.rid          # another tenant, another id
    assert ticket_for(_key("order-43"), "ck_alice", _req()).rid != mine.rid
    assert ticket_for(_key("order-42"), "ck_alice", _req(max_tokens=5)).body != mine.body
    assert ticket_for(_key("x" * 255), "ck_alice", _req()) is not None


@pytest.mark.parametrize("bad", ["", "two words", "caf\u00e9", "tab\there", "x" * 256])
def test_a_malformed_key_is_refused(bad):
    with pytest.raises(InvalidRequest, match="1-255 visible ASCII") as exc:
        ticket_for(_key(bad), "ck_alice", _req())
    assert exc.value.code == "invalid_idempotency_key" and exc.value.status == 400


def test_the_same_key_with_another_body_is_a_422():
    ticket = ticket_for(_key("k"), "anonymous", _req())
    check_same_body(ticket, ticket.body)
    with pytest.raises(ValidationFailed, match="different request body") as exc:
        check_same_body(ticket, "another digest")
    assert exc.value.status == 422 and exc.value.code == "idempotency_key_reused"


def test_without_the_redis_queue_a_key_is_validated_and_otherwise_ignored(fake_gateway, client_for):
    client = client_for(fake_gateway)
    first = client.post(CHAT, json=BODY, headers=_key("k1"))
    other = client.post(CHAT, json={**BODY, "messages": [{"role": "user", "content": "two"}]}, headers=_key("k1"))
    bad = client.post(CHAT, json=BODY, headers=_key("not a key"))
    assert first.json()["choices"][0]["message"]["content"] == "echo says: one"
    assert other.json()["choices"][0]["message"]["content"] == "echo says: two"     # ran again, no 422
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


def test_the_shutdown_hook_runs_before_the_handler_it_found():
    from service.http.shutdown import on_shutdown_signal

    calls = []
    before = signal.signal(signal.SIGINT, lambda *_: calls.append("server"))
    try:
        restore = on_shutdown_signal(lambda: calls.append("drain"))
        signal.raise_signal(signal.SIGINT)
        restore()
        signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)
    assert calls == ["drain", "server", "server"]


# -- real Redis, real worker processes ---------------------------------------------------------------

def _generated(log) -> list[str]:
    """Job ids the worker generated an answer for (one log line each)."""
    return [line.split("generated job ")[1].split(":")[0] for line in log.read_text().splitlines()
            if "generated job " in line]


def _wait_for(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _sse_text(body: str) -> str:
    events = [json.loads(line[6:]) for line in body.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert body.rstrip().endswith("data: [DONE]"), body
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])


@pytest.mark.real
def test_same_key_answers_once_per_api_key_and_refuses_another_body(redis_prefix, fake_gateway, client_for,
                                                                      tmp_path):
    from service.backends import BackendPool

    queue = {"sched_queue": "redis", "redis_url": REDIS_URL, "redis_prefix": redis_prefix, "expert_timeout": 60.0}
    fake_gateway.backends = BackendPool(fake_gateway.settings.with_(**queue))
    client = client_for(fake_gateway, api_keys=frozenset({"sk-alice", "sk-bob"}), **queue)
    alice, bob = {"Authorization": "Bearer sk-alice"}, {"Authorization": "Bearer sk-bob"}
    two = {**BODY, "messages": [{"role": "user", "content": "two"}]}
    log = tmp_path / "worker.log"
    w = start_worker("W", redis_prefix, tmp_path, log=log)
    try:
        first = client.post(CHAT, json=BODY, headers={**alice, **_key("k")})
        again = client.post(CHAT, json=BODY, headers={**alice, **_key("k")})
        with client.stream("POST", CHAT, json={**BODY, "stream": True}, headers={**alice, **_key("k")}) as r:
            replay = r.read().decode()
        clash = client.post(CHAT, json=two, headers={**alice, **_key("k")})
        bobs = client.post(CHAT, json=two, headers={**bob, **_key("k")})   # same key, another tenant
        metrics = fake_gateway.metrics.render().decode()
    finally:
        w.terminate()
        w.wait(10)
    assert first.status_code == 200 and first.json()["choices"][0]["message"]["content"] == "echo: one"
    assert again.json()["choices"] == first.json()["choices"] and again.headers["x-conclave-expert"] == "echo"
    assert _sse_text(replay) == "echo: one"
    assert clash.status_code == 422 and clash.json()["error"]["code"] == "idempotency_key_reused"
    assert bobs.status_code == 200 and bobs.json()["choices"][0]["message"]["content"] == "echo: two"
    assert len(_generated(log)) == 2                                  # one generation per (tenant, key)
    for outcome, n in (("queued", 2), ("stored", 2), ("conflict", 1)):
        assert f'conclave_idempotent_requests_total{{outcome="{outcome}"}} {n}.0' in metrics


@pytest.mark.real
def test_a_keyed_request_that_failed_runs_again_on_retry(redis_prefix, tmp_path):
    import asyncio

    from experts_registry.errors import ExpertUnavailable
    from service.backends import GenParams, collect
    from service.scheduler.redis_queue import RedisFront

    from .conftest import fake_expert

    front, log = RedisFront(REDIS_URL, redis_prefix), tmp_path / "worker.log"
    broken = fake_expert("broken", "fail-load")
    ticket = ticket_for(_key("k"), "anonymous", _req())
    w = start_worker("W", redis_prefix, tmp_path, log=log)

    async def ask():
        return await collect(front.stream(broken, [{"role": "user", "content": "x"}], GenParams(), ticket))

    try:
        for _ in range(2):
            with pytest.raises(ExpertUnavailable, match="failed to load"):
                asyncio.run(asyncio.wait_for(ask(), 30))
    finally:
        w.terminate()
        w.wait(10)
    assert len(set(_generated(log))) == 2       # an error is not kept: the retry was a new job


@pytest.mark.real
def test_a_client_that_leaves_keeps_its_keyed_job_and_a_lost_job_starts_afresh(redis_prefix):
    import asyncio

    import redis

    from service.backends import GenParams, collect
    from service.scheduler.redis_queue import RedisFront, keys

    from .conftest import fake_expert

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    front, ticket = RedisFront(REDIS_URL, redis_prefix), ticket_for(_key("k"), "anonymous", _req())

    async def leave():   # no worker runs: the client gives up while its job waits
        ask = collect(front.stream(fake_expert("echo"), [{"role": "user", "content": "one"}], GenParams(), ticket))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ask, 0.5)

    asyncio.run(leave())
    rec = asyncio.run(front.find(ticket))
    assert rec is not None and not rec.answered and not list(r.scan_iter(k["cancel"] + "*"))
    r.xdel(k["jobs"], rec.entry)                        # the stream lost it (trimmed, flushed)
    assert asyncio.run(front.find(ticket)) is None and not r.exists(k["request"] + ticket.rid)


class Client(threading.Thread):
    """One HTTP request in a thread: status, headers and body once it is answered."""

    def __init__(self, base: str, content: str, key: str | None, stream: bool = False, model: str = "smollm2",
                 max_tokens: int = 8):
        super().__init__(daemon=True)
        self.url, self.stream, self.result = base + CHAT, stream, None
        self.body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream,
                     "max_tokens": max_tokens, "temperature": 0}
        self.headers = _key(key) if key else {}
        self.start()

    def run(self):
        r = httpx.post(self.url, json=self.body, headers=self.headers, timeout=120)
        self.result = (r.status_code, r.headers, r.text)

    def answer(self) -> str:
        self.join(120)
        status, _, text = self.result
        assert status == 200, text
        return _sse_text(text) if self.stream else json.loads(text)["choices"][0]["message"]["content"]


def _gateway_env(prefix: str, grace: float) -> dict:
    return {"CONCLAVE_REDIS_URL": REDIS_URL, "CONCLAVE_REDIS_PREFIX": prefix, "CONCLAVE_SCHED_QUEUE": "redis",
            "CONCLAVE_SHUTDOWN_GRACE": str(grace)}


def _sigterm_with_queued(proc: subprocess.Popen, clients: list[Client], r, jobs_key: str) -> None:
    """SIGTERM a gateway once every client's job is in the stream; its clients have their answers."""
    _wait_for(lambda: r.xlen(jobs_key) == len(clients), what=f"{len(clients)} queued jobs")
    proc.send_signal(signal.SIGTERM)
    for c in clients:
        c.join(30)
    assert proc.wait(30) in (0, -signal.SIGTERM)


@pytest.mark.real
def test_queued_requests_survive_a_gateway_restart_and_are_answered_once(redis_prefix, tmp_path):
    import redis
    from openai import OpenAI

    from service.scheduler.redis_queue import keys

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    env, log = _gateway_env(redis_prefix, grace=3), tmp_path / "worker.log"
    keys_ = [f"order-{i}" for i in range(4)]
    procs: list[subprocess.Popen] = []
    try:
        g1, base1 = start_gateway(tmp_path / "h", tmp_path / "g1.log", **env)
        procs.append(g1)
        first = [Client(base1, f"q{i}", key, stream=i % 2 == 1) for i, key in enumerate(keys_)]
        keyless = Client(base1, "no key", None)
        t0 = time.monotonic()
        _sigterm_with_queued(g1, first + [keyless], r, k["jobs"])
        assert time.monotonic() - t0 < 15
        for c in first:
            status, headers, text = c.result
            error = json.loads(text)["error"]
            assert status == 503 and int(headers["retry-after"]) >= 1, text
            assert error["code"] == "shutting_down" and "same Idempotency-Key" in error["message"]
        assert keyless.result[0] == 503 and "withdrawn" in json.loads(keyless.result[2])["error"]["message"]
        assert r.xlen(k["jobs"]) == 5 and len(list(r.scan_iter(k["cancel"] + "*"))) == 1   # kept, bar the keyless

        g2, base2 = start_gateway(tmp_path / "h", tmp_path / "g2.log", **env)
        procs.append(g2)
        retries = [Client(base2, f"q{i}", key, stream=i % 2 == 1) for i, key in enumerate(keys_)]
        time.sleep(1.0)
        assert all(c.is_alive() for c in retries)      # no worker yet: they wait on the jobs queued before
        procs.append(start_worker("W", redis_prefix, tmp_path, log=log))
        assert [c.answer() for c in retries] == [f"smollm2: q{i}" for i in range(4)]

        client = OpenAI(base_url=base2 + "/v1", api_key="unused", max_retries=0)
        for i, key in enumerate(keys_):   # after delivery: the stored answer, as JSON and as SSE
            messages = [{"role": "user", "content": f"q{i}"}]
            done = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=8, temperature=0,
                                                  extra_headers=_key(key))
            chunks = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=8,
                                                    temperature=0, stream=True, extra_headers=_key(key))
            assert done.choices[0].message.content == f"smollm2: q{i}"
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"smollm2: q{i}"
        metrics = httpx.get(base2 + "/metrics").text
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
    assert sorted(_generated(log)) == sorted(set(_generated(log))) and len(_generated(log)) == 4
    assert 'conclave_idempotent_requests_total{outcome="resumed"} 4.0' in metrics
    assert 'conclave_idempotent_requests_total{outcome="stored"} 8.0' in metrics
    assert 'conclave_idempotent_requests_total{outcome="queued"}' not in metrics


@pytest.mark.real
def test_a_real_llamacpp_worker_answers_requests_queued_before_a_restart(redis_prefix, tmp_path):
    import redis

    from service.scheduler.redis_queue import keys

    r, k = redis.Redis.from_url(REDIS_URL), keys(redis_prefix)
    env, log = _gateway_env(redis_prefix, grace=2), tmp_path / "worker.log"
    procs: list[subprocess.Popen] = []
    try:
        g1, base1 = start_gateway(tmp_path / "h", tmp_path / "g1.log", **env)
        procs.append(g1)
        asks = [Client(base1, "Name a colour.", "colour"), Client(base1, "Name a fruit.", "fruit", stream=True)]
        _sigterm_with_queued(g1, asks, r, k["jobs"])
        assert [c.result[0] for c in asks] == [503, 503]
        procs.append(start_worker("L", redis_prefix, tmp_path, kind="llamacpp", log=log))
        g2, base2 = start_gateway(tmp_path / "h", tmp_path / "g2.log", **env)
        procs.append(g2)
        retry = [Client(base2, "Name a colour.", "colour"), Client(base2, "Name a fruit.", "fruit", stream=True)]
        answers = [c.answer() for c in retry]
        again = [Client(base2, "Name a colour.", "colour", stream=True), Client(base2, "Name a fruit.", "fruit")]
        assert [c.answer() for c in again] == answers and all(a.strip() for a in answers)
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
    assert len(_generated(log)) == 2
