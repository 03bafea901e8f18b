"""Issue 19 against the real server (`conclave serve` in a subprocess, the bundled llama.cpp experts)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx
import pytest

from .servers import running_gateway

pytestmark = pytest.mark.real
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Say hello."}]
LONG = " ".join(f"word{i} apple" for i in range(6000))   # ~60 KB: far past smollm2's 2048 tokens


KEY: dict = {}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The gateway, with one stored key (limits: 1000 requests, 10^6 tokens a minute), so auth is on."""
    home = tmp_path_factory.mktemp("hardening-home")
    out = subprocess.run([sys.executable, "-m", "service.cli", "keys", "create", "tester", "--rpm", "1000",
                          "--tpm", "1000000"], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "CONCLAVE_HOME": str(home)})
    KEY["Authorization"] = "Bearer " + out.stdout.split()[-1]
    with running_gateway(home, home / "server.log", CONCLAVE_MAX_TOKENS_CAP="512") as url:
        yield url


def post(base, body, headers=None, **kw):
    return httpx.post(base + CHAT, json=body, timeout=120, headers={**KEY, **(headers or {})}, **kw)


def get(base, path, **kw):
    return httpx.get(base + path, headers=KEY, timeout=30, **kw)


def raw(base, data: bytes) -> tuple[int, dict, bytes]:
    """Send bytes as they are (no client would send them) and read the whole answer."""
    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_three_over_long_prompts_then_a_normal_one_400_400_400_200(base):
    codes = []
    for _ in range(3):
        r = post(base, {"model": "smollm2", "messages": [{"role": "user", "content": LONG}], "max_tokens": 4})
        codes.append(r.status_code)
        err = r.json()["error"]
        assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
        assert "2048" in err["message"] and r.headers["x-should-retry"] == "false"
    r = post(base, {"model": "smollm2", "messages": HI, "max_tokens": 4})
    codes.append(r.status_code)
    assert codes == [400, 400, 400, 200]


@pytest.mark.parametrize("router", ["knn", "skills", "coe"])
def test_an_untrained_router_named_in_a_request_is_a_400_without_a_path(base, router):
    r = post(base, {"model": "conclave-auto", "messages": HI, "max_tokens": 4, "conclave": {"router": router}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "router_unavailable" and repr(router) in err["message"]
    assert ("conclave profile build" if router == "skills" else f"conclave router train {router}") in err["message"]
    assert "/tmp" not in r.text and "routers/" not in r.text


def test_models_retrieve_answers_the_model_object_or_404(base):
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY["Authorization"].split()[1], max_retries=0)
    model = client.models.retrieve("smollm2")
    assert model.id == "smollm2" and model.object == "model" and model.owned_by == "conclave"
    assert client.models.retrieve("conclave-auto").id == "conclave-auto"
    r = get(base, "/v1/models/no-such-model")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert httpx.get(base + "/v1/models/smollm2").status_code == 401   # behind the key like the list


def test_health_head_liveness_and_readiness(base):
    assert httpx.head(base + "/health").status_code == 200
    assert httpx.head(base + "/health/liveness").status_code == 200
    r = httpx.get(base + "/health/readiness")
    assert r.status_code == 200 and r.json() == {"status": "ready", "reasons": []}
    assert httpx.get(base + "/health").json()["status"] == "ok"


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n",                 # CR inside a header value
    b"BOGUS\x01 /health HTTP/1.1\r\nHost: x\r\n\r\n",                            # not a method
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",  # negative length
    b"GET /health HTTP/9.Z\r\n\r\n",
], ids=["cr-in-header", "bogus-method", "negative-length", "bad-version"])
def test_malformed_http_gets_an_openai_style_json_400(base, request_bytes):
    status, headers, body = raw(base, request_bytes)
    assert status == 400 and headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert err["code"] == "invalid_http" and err["type"] == "invalid_request_error"


def test_an_unknown_but_well_formed_method_is_a_json_405(base):
    status, headers, body = raw(base, b"PROPFIND /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 405 and "error" in json.loads(body)


@pytest.mark.parametrize("body,param", [
    ({"max_tokens": 4, "max_completion_tokens": 4}, "max_tokens"),
    ({"max_completion_tokens": 100000}, "max_completion_tokens"),
    ({"max_tokens": 100000}, "max_tokens"),
])
def test_token_limit_errors_name_the_field_that_was_sent(base, body, param):
    r = post(base, {"model": "smollm2", "messages": HI, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert param in r.json()["error"]["message"]


def test_request_id_and_rate_limit_headers(base):
    mine = post(base, {"model": "smollm2", "messages": HI, "max_tokens": 2}, headers={"x-request-id": "my-trace-42"})
    assert mine.status_code == 200 and mine.headers["x-request-id"] == "my-trace-42"
    assert mine.headers["x-ratelimit-limit-requests"] == "1000"
    assert 0 < int(mine.headers["x-ratelimit-remaining-requests"]) < 1000
    assert mine.headers["x-ratelimit-reset-requests"].endswith("s")
    assert mine.headers["x-ratelimit-limit-tokens"] == "1000000"
    assert int(mine.headers["x-ratelimit-remaining-tokens"]) <= 1000000
    ids = {httpx.get(base + p).headers["x-request-id"] for p in ("/health", "/nope", "/v1/models")}
    assert len(ids) == 3 and all(i.startswith("req_") for i in ids)   # errors too, each its own
    bad = post(base, {"model": "smollm2"})
    assert bad.status_code >= 400 and bad.headers["x-should-retry"] == "false" and bad.headers["x-request-id"]
