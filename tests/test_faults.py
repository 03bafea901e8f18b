"""Fault injection: the gateway against a real misbehaving upstream (an HTTP server in a subprocess),
on both client paths to an OpenAI-compatible expert: the lean aiohttp client and litellm."""

from __future__ import annotations

import json
import time

import pytest

from experts_registry import open_store
from experts_registry.model import Expert
from service.backends import BackendPool
from service.core.config import load_settings
from service.pipeline.gateway import Gateway

from .servers import start_fake_upstream

pytestmark = pytest.mark.real
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module", params=["lean", "litellm"])
def upstream(request):
    """A fresh upstream per client path (it counts requests per model to fail the first N)."""
    proc, base = start_fake_upstream()
    yield base, request.param
    proc.kill()


@pytest.fixture
def client(upstream, tmp_path, client_for):
    upstream, path = upstream
    settings = load_settings().with_(expert_timeout=2.0, breaker_failures=2, breaker_cooldown=60.0,
                                     lean_client=path == "lean")
    store = open_store(tmp_path / "faults")
    for name, model, skills in [("good", "ok", ("general",)), ("rate", "429-1", ()), ("flaky", "500-1", ()),
                                ("broken", "500", ("broken",)), ("hang", "hang", ()), ("reset", "reset", ()),
                                ("mid", "midstream", ()), ("broken2", "500", ())]:
        store.add(Expert(name=name, backend="litellm", model=f"openai/{model}", api_base=upstream + "/v1",
                         skills=skills))
    backends = BackendPool(settings)
    assert backends.kind_for(store.get("good")) == ("openai" if path == "lean" else "litellm")
    return client_for(Gateway(settings, store, backends))


def ask(client, model, **kw):
    return client.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": "hi"}], **kw})


def metric(client, line: str) -> bool:
    return line in client.get("/metrics").text


def test_429_with_retry_after_is_retried_after_waiting(client):
    t0 = time.monotonic()
    r = ask(client, "rate")
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "upstream ok"
    assert time.monotonic() - t0 >= 1.0     # it honoured Retry-After: 1 before the retry
    assert metric(client, 'conclave_retries_total{expert="rate"} 1.0')


def test_500_once_is_retried(client):
    assert ask(client, "flaky").status_code == 200
    assert metric(client, 'conclave_retries_total{expert="flaky"} 1.0')


def test_persistent_500_is_502_then_the_breaker_opens(client):
    for _ in range(2):   # CONCLAVE_BREAKER_FAILURES=2 failed calls (each retried twice)
        r = ask(client, "broken")
        assert r.status_code == 502 and "'broken'" in r.json()["error"]["message"]
    assert metric(client, 'conclave_retries_total{expert="broken"} 4.0')
    assert metric(client, 'conclave_breaker_trips_total{expert="broken"} 1.0')
    r = ask(client, "broken")          # cooled down: fails fast without calling the upstream
    assert r.status_code == 503 and "cooling down" in r.json()["error"]["message"]


def test_hang_past_timeout_is_504(client):
    r = ask(client, "hang")
    assert r.status_code == 504 and r.json()["error"]["code"] == "expert_timeout"


def test_connection_reset_is_502(client):
    r = ask(client, "reset")
    assert r.status_code == 502 and "'reset'" in r.json()["error"]["message"]


def test_mid_stream_disconnect_is_an_in_band_error_without_done(client):
    with client.stream("POST", CHAT, json={"model": "mid", "stream": True, "messages": [
            {"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        lines = [l for l in r.iter_lines() if l]
    assert "data: [DONE]" not in lines
    texts = [json.loads(l[6:]) for l in lines]
    assert any(c.get("choices") and c["choices"][0]["delta"].get("content") == "upstream" for c in texts)
    assert "error" in texts[-1] and "'mid'" in texts[-1]["error"]["message"]


def test_routed_request_falls_back_to_the_next_expert(client):
    r = client.post(CHAT, json={"model": "conclave-auto", "messages": [
        {"role": "user", "content": "this is broken"}], "conclave": {"router": "tags"}})
    assert r.status_code == 200
    info = r.json()["conclave"]
    assert info["route"]["experts"] == ["broken"] and info["expert"] != "broken"
    assert "broken" in info["fallback_from"]
    assert r.headers["x-conclave-expert"] == info["expert"]
