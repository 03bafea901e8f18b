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


# ---- a fuzz corpus of our own: every case against the real server, none may be a 5xx or leak ----

def _corpus() -> list[tuple[str, object]]:
    """(id, body) pairs: body is a dict/list/scalar sent as JSON, or bytes sent as they are."""
    msg = [{"role": "user", "content": "hi"}]
    cases: list[tuple[str, object]] = [
        ("empty", b""), ("not-json", b"{model: smollm2"), ("truncated", b'{"model": "smollm2", "messages": ['),
        ("trailing-garbage", b'{"model": "smollm2"} xyz'), ("nul-bytes", b'{"model": "\x00"}'),
        ("bad-utf8", b'{"model": "\xff\xfe", "messages": []}'), ("json-null", None), ("json-list", [1, 2]),
        ("json-string", "hello"), ("json-number", 42), ("json-true", True), ("deep-nesting", b"[" * 5000 + b"]" * 5000),
        ("huge-number", b'{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}'),
        ("nan", b'{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'),
        ("dup-keys", b'{"model": "smollm2", "model": "x", "messages": [{"role": "user", "content": "hi"}]}'),
    ]
    wrong = [None, 1, -1, 1.5, "", "x", True, [], {}, [1], {"a": 1}, 10**30, -10**30]
    for field in ("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
                  "seed", "stream", "stream_options", "n", "user", "conclave"):
        for i, value in enumerate(wrong):
            cases.append((f"{field}-{i}", {"model": "smollm2", "messages": msg, "max_tokens": 2, field: value}))
    weird_text = ["\u0000", "\ud7ff\ue000", "\U0001f600" * 50, "\u202e", "a\u0301" * 30, "\ufeff", "\r\n" * 20,
                  "</s><|im_end|><|endoftext|>", "{{ raise('x') }}", "%s%n%x", "../../../../etc/passwd"]
    for i, text in enumerate(weird_text):
        cases.append((f"unicode-{i}", {"model": "smollm2", "messages": [{"role": "user", "content": text}],
                                       "max_tokens": 2}))
    parts = [[{"type": "text", "text": "hi"}], [{"type": "image_url", "image_url": {"url": "http://x"}}],
             [{"type": "text"}], [], [{"no": "type"}], [{"type": "text", "text": 5}], "x" * 3]
    for i, content in enumerate(parts):
        cases.append((f"parts-{i}", {"model": "smollm2", "messages": [{"role": "user", "content": content}],
                                     "max_tokens": 2}))
    roles = ["system", "developer", "assistant", "tool", "robot", "", None, 5]
    for i, role in enumerate(roles):
        cases.append((f"role-{i}", {"model": "smollm2", "messages": [{"role": role, "content": "hi"}],
                                    "max_tokens": 2}))
    openai_fields = {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto",
                     "response_format": {"type": "json_object"}, "logprobs": True, "top_logprobs": 3,
                     "logit_bias": {"1": 5}, "presence_penalty": 1, "frequency_penalty": -1, "functions": [],
                     "parallel_tool_calls": True, "modalities": ["text"], "audio": {}, "store": True,
                     "metadata": {"a": "b"}, "reasoning_effort": "high", "service_tier": "auto", "prediction": {}}
    for name, value in openai_fields.items():
        cases.append((f"openai-{name}", {"model": "smollm2", "messages": msg, "max_tokens": 2, name: value}))
    for name in ("api_base", "base_url", "api_key", "extra_headers"):
        cases.append((f"forbidden-{name}", {"model": "smollm2", "messages": msg, name: "http://169.254.169.254"}))
    cases += [("routed-unknown-router", {"model": "conclave-auto", "messages": msg, "conclave": {"router": "zzz"}}),
              ("routed-k-0", {"model": "conclave-auto", "messages": msg, "conclave": {"k": 0}}),
              ("routed-extra", {"model": "conclave-auto", "messages": msg, "conclave": {"evil": 1}}),
              ("routed-empty", {"model": "conclave-auto", "messages": [{"role": "user", "content": " "}]}),
              ("many-messages", {"model": "smollm2", "messages": msg * 300}),
              ("model-long", {"model": "m" * 300, "messages": msg}),
              ("model-path", {"model": "../../etc/passwd", "messages": msg})]
    return cases


CORPUS = _corpus()
LEAKS = ("Traceback", 'File "', "/work/", "/tmp/", "site-packages", ".py\"", "sk-conclave-")


def test_the_corpus_is_big_enough():
    assert len(CORPUS) >= 100 and len({name for name, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[name for name, _ in CORPUS])
def test_fuzz_corpus_no_5xx_no_leak_openai_shaped(base, case):
    name, body = case
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(base + CHAT, content=data, headers={**KEY, "content-type": "application/json"}, timeout=120)
    assert r.status_code < 500, (name, r.status_code, r.text[:500])
    assert r.headers.get("x-request-id")
    assert not any(leak in r.text for leak in LEAKS), (name, r.text[:500])
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
