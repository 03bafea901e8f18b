"""Issue 19 against the real server (`conclave serve` in a subprocess, the bundled llama.cpp experts)."""

from __future__ import annotations

import httpx
import pytest

from .servers import running_gateway

pytestmark = pytest.mark.real
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Say hello."}]
LONG = " ".join(f"word{i} apple" for i in range(6000))   # ~60 KB: far past smollm2's 2048 tokens


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    home = tmp_path_factory.mktemp("hardening-home")
    with running_gateway(home, home / "server.log", CONCLAVE_MAX_TOKENS_CAP="512") as url:
        yield url


def post(base, body, **kw):
    return httpx.post(base + CHAT, json=body, timeout=120, **kw)


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
