"""Issue 19: a client cannot take an expert offline, and errors say what they mean (gateway level,
against a real misbehaving upstream in a subprocess, on both client paths)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from experts_registry import open_store
from experts_registry.model import Expert
from service.backends import BackendPool
from service.core.config import load_settings
from service.core.protocol import ChatRequest
from service.pipeline.gateway import Gateway

from .servers import free_port, start_fake_upstream

pytestmark = pytest.mark.real
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def upstream():
    proc, base = start_fake_upstream()
    yield base
    proc.kill()


def gateway(upstream, tmp_path, lean=True, **changes) -> Gateway:
    settings = load_settings().with_(expert_timeout=10.0, breaker_failures=2, breaker_cooldown=30.0,
                                     lean_client=lean, **changes)
    store = open_store(tmp_path / "hardening")
    for name in ("ok", "ctx", "bad", "verbose", "slow"):
        store.add(Expert(name=name, backend="litellm", model=f"openai/{name}", api_base=upstream + "/v1"))
    return Gateway(settings, store, BackendPool(settings))


def ask(client, model, **kw):
    return client.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": "hi"}], **kw})


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "litellm"])
def test_an_upstream_context_overflow_is_a_400_that_never_trips_the_breaker(upstream, tmp_path, client_for, lean):
    gw = gateway(upstream, tmp_path, lean)
    client = client_for(gw)
    for _ in range(3):   # CONCLAVE_BREAKER_FAILURES=2: a 502 here would have opened it
        r = ask(client, "ctx")
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded"
        assert r.headers["x-should-retry"] == "false"
    assert gw.breakers.get("ctx").failures == 0 and gw.breakers.open_experts() == []
    r = ask(client, "bad")
    assert r.status_code == 400 and r.json()["error"]["code"] == "upstream_rejected_request"
    assert gw.breakers.get("bad").failures == 0


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "litellm"])
def test_an_upstream_error_body_reaches_the_caller_only_as_a_short_summary(upstream, tmp_path, client_for, lean):
    client = client_for(gateway(upstream, tmp_path, lean, retries=0))
    r = ask(client, "verbose")
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert len(message) < 300 and "\n" not in message
    assert "sk-upstream-secret" not in r.text


def test_half_open_breaker_lets_the_others_wait_for_the_trial_call(upstream, tmp_path):
    gw = gateway(upstream, tmp_path)
    breaker = gw.breakers.get("slow")
    breaker.failures, breaker.opened_at = 2, time.monotonic() - 60   # cooled down: the next call is the trial
    req = ChatRequest(model="slow", messages=[{"role": "user", "content": "hi"}])

    async def main():
        return await asyncio.gather(*(gw.complete(req) for _ in range(6)), return_exceptions=True)

    results = asyncio.run(main())
    assert [type(r).__name__ for r in results] == ["tuple"] * 6   # 6 answers: none refused
    assert breaker.opened_at is None and not breaker.trial


def test_an_open_breaker_says_honestly_when_to_retry(upstream, tmp_path, client_for):
    gw = gateway(upstream, tmp_path)
    client = client_for(gw)
    breaker = gw.breakers.get("ok")
    breaker.failures, breaker.opened_at = 2, time.monotonic()
    r = ask(client, "ok")
    assert r.status_code == 503 and 25 <= int(r.headers["Retry-After"]) <= 30
    assert "retry in 0 s" not in r.json()["error"]["message"] and "retry in" in r.json()["error"]["message"]


def test_a_trial_call_that_ends_without_a_verdict_hands_over(upstream, tmp_path):
    """The trial's own request was at fault (a 400): the breaker stays half-open for the next caller."""
    gw = gateway(upstream, tmp_path)
    breaker = gw.breakers.get("ctx")
    breaker.failures, breaker.opened_at = 2, time.monotonic() - 60
    req = ChatRequest(model="ctx", messages=[{"role": "user", "content": "hi"}])

    async def main():
        return await asyncio.gather(*(gw.complete(req) for _ in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert [getattr(r, "code", None) for r in results] == ["context_length_exceeded"] * 3
    assert not breaker.trial


SECRET_ADMIN = "adm-secret-19"


def register(client, **fields):
    record = {"name": "mine", "backend": "litellm", "model": "openai/x", "api_base": "http://127.0.0.1:9/v1",
              **fields}
    return client.post("/admin/experts", json=record, headers={"Authorization": f"Bearer {SECRET_ADMIN}"})


@pytest.mark.parametrize("allowed", ["", "OPENAI_API_KEY,CONCLAVE_ADMIN_KEYS"], ids=["none", "listed"])
def test_over_http_an_expert_may_name_no_conclave_variable(fake_gateway, client_for, monkeypatch, allowed):
    monkeypatch.setenv("CONCLAVE_ADMIN_KEYS", SECRET_ADMIN)
    client = client_for(fake_gateway, admin_keys=frozenset({SECRET_ADMIN}),
                        expert_secrets=frozenset(filter(None, allowed.split(","))))
    r = register(client, api_key_env="CONCLAVE_ADMIN_KEYS")
    assert r.status_code == 403 and r.json()["error"]["code"] == "secret_not_allowed"
    assert "CONCLAVE_EXPERT_SECRETS" in r.json()["error"]["message"] and SECRET_ADMIN not in r.text


def test_over_http_only_the_operators_allowlist_may_be_named(fake_gateway, client_for):
    client = client_for(fake_gateway, admin_keys=frozenset({SECRET_ADMIN}), expert_secrets=frozenset())
    r = register(client, api_key_env="OPENAI_API_KEY")
    assert r.status_code == 403 and "it is empty" in r.json()["error"]["message"]
    assert register(client).status_code == 201   # no variable at all is fine
    client = client_for(fake_gateway, admin_keys=frozenset({SECRET_ADMIN}),
                        expert_secrets=frozenset({"OPENAI_API_KEY"}))
    assert register(client, name="other", api_key_env="OPENAI_API_KEY").status_code == 201
    assert register(client, name="third", api_key_env="HOME_SECRET").status_code == 403


def test_the_local_cli_may_name_any_variable(tmp_path):
    env = {**__import__("os").environ, "CONCLAVE_HOME": str(tmp_path / "cli-home")}
    out = subprocess.run([sys.executable, "-m", "service.cli", "experts", "add", "remote", "--backend", "litellm",
                          "--model", "openai/x", "--api-base", "http://127.0.0.1:9/v1",
                          "--api-key-env", "CONCLAVE_SOMETHING"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


class ScriptedResolver:
    """An aiohttp resolver answering from a table (there is no public DNS here): a rebinding DNS."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.asked = answers, []

    async def resolve(self, host, port=0, family=0):
        import socket

        self.asked.append(host)
        return [{"hostname": host, "host": ip, "port": port, "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                 "proto": 0, "flags": 0} for ip in self.answers[host]]

    async def close(self):
        return None


def lean_gateway(upstream, tmp_path, resolver, client_for):
    from service.backends.openai_backend import OpenAIBackend

    port = upstream.rsplit(":", 1)[1]
    settings = load_settings().with_(expert_timeout=5.0, retries=0)
    store = open_store(tmp_path / "rebind")
    for host in ("rebound.test", "mixed.test", "plain.test"):
        store.add(Expert(name=host.split(".")[0], backend="litellm", model="openai/ok",
                         api_base=f"http://{host}:{port}/v1"))
    store.add(Expert(name="literal", backend="litellm", model="openai/ok", api_base="http://[::ffff:a9fe:a9fe]/v1"))
    pool = BackendPool(settings, {"openai": lambda s: OpenAIBackend(s.expert_timeout, resolver=resolver)})
    return client_for(Gateway(settings, store, pool))


def test_the_lean_client_connects_only_to_the_address_it_checked(upstream, tmp_path, client_for):
    """Registration saw a safe address; at connect time the name resolves to the metadata address
    (DNS rebinding): refused, and a mixed answer connects to its safe address only."""
    resolver = ScriptedResolver({"rebound.test": ["169.254.169.254"], "mixed.test": ["169.254.169.254", "127.0.0.1"],
                                 "plain.test": ["127.0.0.1"]})
    client = lean_gateway(upstream, tmp_path, resolver, client_for)
    assert ask(client, "plain").status_code == 200          # pinned: the name exists only in the resolver
    r = ask(client, "rebound")
    assert r.status_code == 502 and "link-local or cloud-metadata" in r.json()["error"]["message"]
    assert ask(client, "mixed").status_code == 200
    r = ask(client, "literal")                               # stored before the check existed: refused at connect
    assert r.status_code == 502 and "link-local or cloud-metadata" in r.json()["error"]["message"]
    assert set(resolver.asked) == {"plain.test", "rebound.test", "mixed.test"}


@pytest.mark.parametrize("args", [["worker", "--kind", "fake"], ["experts", "list"], ["keys", "create", "x"],
                                  ["serve", "--port", "1"], ["chat", "hi"], ["route", "hi"]])
def test_every_cli_entry_point_says_one_line_when_redis_does_not_answer(tmp_path, args):
    env = {**__import__("os").environ, "CONCLAVE_HOME": str(tmp_path / "h"),
           "CONCLAVE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    out = subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, env=env,
                         timeout=120)
    errors = [line for line in out.stderr.splitlines() if not line.startswith("20")]   # log lines carry a date
    assert out.returncode == 1 and len(errors) == 1, out.stderr
    assert "Traceback" not in out.stderr and "Redis" in errors[0]
