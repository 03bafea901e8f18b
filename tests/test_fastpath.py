"""The ASGI fast path for POST /v1/chat/completions answers exactly as the FastAPI route does
(bodies, statuses, error codes, headers), keeps keys, limits and metrics, and stays described in
the OpenAPI schema."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app

CHAT = "/v1/chat/completions"
VOLATILE = ("id", "created")


def body(model="echo", content="hello there", **kw):
    return {"model": model, "messages": [{"role": "user", "content": content}], **kw}


@pytest.fixture
def pair(fake_gateway):
    """(fast path, FastAPI route) clients over the same gateway."""
    settings = fake_gateway.settings
    with TestClient(create_app(settings, fake_gateway)) as fast, \
            TestClient(create_app(settings, fake_gateway, fast_path=False)) as slow:
        yield fast, slow


def _comparable(resp) -> tuple:
    data = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in VOLATILE}
    conclave_headers = sorted((k, v) for k, v in resp.headers.items() if k.startswith("x-conclave") or k == "retry-after")
    return resp.status_code, data, conclave_headers


@pytest.mark.parametrize("payload", [
    body(),
    body(max_tokens=2),
    body("conclave-auto", "solve this algebra equation"),
    body("conclave-moe", "what is 2+2", conclave={"k": 2, "aggregator": "vote", "return_candidates": True}),
    body("nope"),
    {"messages": [{"role": "user", "content": "x"}]},
    body(messages=[]),
    {"model": "echo", "messages": [{"role": "wizard", "content": "x"}]},
    body(temperature=5),
    body(n=2),
    body(max_tokens=10_000),
    body(api_base="http://169.254.169.254/"),
    body(conclave={"router": "nope"}, model="conclave-auto"),
    body(conclave={"nonsense": 1}),
    body(stop=["a", "b", "c", "d", "e"]),
    body("fail"),
    [1, 2],
    "a string",
])
def test_fast_path_answers_like_the_fastapi_route(pair, payload):
    fast, slow = pair
    a, b = (c.post(CHAT, json=payload) for c in pair)
    assert _comparable(a) == _comparable(b), (a.text, b.text)


@pytest.mark.parametrize("raw,code", [(b"{not json", "invalid_json"), (b"", "invalid_body"), (b"   ", "invalid_json")])
def test_unparsable_bodies_match(pair, raw, code):
    for c in pair:
        r = c.post(CHAT, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == code


def test_streams_match(pair):
    texts = []
    for c in pair:
        with c.stream("POST", CHAT, json=body(stream=True, stream_options={"include_usage": True})) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        texts.append(("".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"]),
                      chunks[-1]["usage"]))
    assert texts[0] == texts[1]
    assert texts[0][0] == "echo says: hello there"


def test_mid_stream_failure_is_in_band_on_the_fast_path(pair):
    fast, _ = pair
    with fast.stream("POST", CHAT, json=body("midfail", stream=True)) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["type"] == "upstream_error"


def test_json_body_is_read_whatever_the_content_type(pair):
    """curl -d sends application/x-www-form-urlencoded: the fast path still reads the JSON."""
    fast, _ = pair
    r = fast.post(CHAT, content=json.dumps(body()).encode(),
                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo says: hello there"


def test_keys_limits_and_metrics_still_apply(fake_gateway):
    settings = fake_gateway.settings.with_(api_keys=frozenset({"sk-user"}), admin_keys=frozenset({"sk-admin"}))
    fake_gateway.settings = settings
    with TestClient(create_app(settings, fake_gateway)) as c:
        assert c.post(CHAT, json=body()).status_code == 401
        assert c.post(CHAT, json=body(), headers={"authorization": "Bearer wrong"}).status_code == 401
        big = body(content="x" * 30_000)
        assert c.post(CHAT, json=big, headers={"authorization": "Bearer sk-user"}).status_code == 413
        ok = c.post(CHAT, json=body(), headers={"authorization": "Bearer sk-user"})
        assert ok.status_code == 200 and ok.headers["x-conclave-expert"] == "echo"
        metrics = c.get("/metrics", headers={"authorization": "Bearer sk-admin"}).text
    assert 'conclave_requests_total{route="/v1/chat/completions",status="200"} 1.0' in metrics
    assert 'conclave_requests_total{route="/v1/chat/completions",status="401"} 2.0' in metrics
    assert 'conclave_expert_calls_total{expert="echo",outcome="ok"} 1.0' in metrics


def test_other_methods_and_the_schema_stay_with_fastapi(pair):
    fast, _ = pair
    r = fast.get(CHAT)
    assert r.status_code == 405 and "error" in r.json()
    schema = fast.get("/openapi.json").json()
    assert "post" in schema["paths"][CHAT]
    assert "ChatRequest" in json.dumps(schema["paths"][CHAT]["post"]["requestBody"])
