"""The lean OpenAI-compatible client (service/backends/openai_backend.py) against real HTTP servers in
subprocesses (tests/fake_upstream.py for faults, benchmarks/perf/load_upstream.py for usage in streams),
the rule that sends an expert to it, and the gateway's expert-record cache."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import pytest

from experts_registry import open_store
from experts_registry.errors import ExpertNotFound, ExpertTimeout, UpstreamError
from experts_registry.model import Expert
from experts_registry.store import CachedStore
from service.backends import BackendPool
from service.core.backend import GenParams, collect, scrub
from service.backends.openai_backend import OpenAIBackend, build_request, lean_eligible
from service.core.config import load_settings

from .servers import free_port

HI = [{"role": "user", "content": "hi"}]


def _serve(args: list[str], ready: str):
    proc = subprocess.Popen([sys.executable, "-m", *args])
    for _ in range(200):
        try:
            httpx.get(ready, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{args} did not start")


@pytest.fixture(scope="module")
def faulty():
    port = free_port()
    proc = _serve(["tests.fake_upstream", str(port)], f"http://127.0.0.1:{port}")
    yield f"http://127.0.0.1:{port}/v1"
    proc.kill()


@pytest.fixture(scope="module")
def load_upstream():
    port = free_port()
    proc = _serve(["benchmarks.perf.load_upstream", "--port", str(port), "--latency-ms", "1"],
                  f"http://127.0.0.1:{port}/health")
    yield f"http://127.0.0.1:{port}/v1"
    proc.kill()


def expert(base: str, model: str, **kw) -> Expert:
    return Expert(name=f"e-{model.replace('/', '-')}", backend="litellm", model=f"openai/{model}", api_base=base, **kw)


def run(coro):
    return asyncio.run(coro)


async def _collect(e: Expert, params: GenParams = GenParams(), timeout: float = 5.0):
    backend = OpenAIBackend(timeout)
    try:
        return await collect(backend.stream(e, HI, params))
    finally:
        await backend.close()


async def _deltas_then_error(e: Expert):
    backend, seen = OpenAIBackend(5.0), []
    try:
        async for d in backend.stream(e, HI, GenParams()):
            seen.append(d.text)
    except UpstreamError as exc:
        return seen, exc
    finally:
        await backend.close()
    return seen, None


@pytest.mark.real
def test_whole_answer_with_usage(faulty):
    gen = run(_collect(expert(faulty, "ok"), GenParams(stream=False)))
    assert (gen.text, gen.finish_reason) == ("upstream ok", "stop")
    assert gen.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@pytest.mark.real
def test_streamed_answer(faulty):
    gen = run(_collect(expert(faulty, "ok")))
    assert (gen.text, gen.finish_reason) == ("upstream ok", "stop")


@pytest.mark.real
def test_streamed_usage_and_completion_style(load_upstream):
    gen = run(_collect(expert(load_upstream, "load")))
    assert gen.text.startswith("upstream") and gen.usage["total_tokens"] == 10
    base = run(_collect(expert(load_upstream, "load", prompt_style="completion"), GenParams(stream=False)))
    assert base.text == "upstream ok"


@pytest.mark.real
@pytest.mark.parametrize("model,retry_after", [("429-1", 1.0), ("500", None)])
def test_429_and_5xx_are_retryable(faulty, model, retry_after):
    with pytest.raises(UpstreamError) as err:
        run(_collect(expert(faulty, model)))
    assert err.value.retryable and err.value.retry_after == retry_after
    assert f"expert 'e-{model}' failed: HTTP" in err.value.message


@pytest.mark.real
def test_4xx_is_not_retryable(load_upstream):
    with pytest.raises(UpstreamError) as err:
        run(_collect(expert(load_upstream + "/no-such-route", "load")))
    assert not err.value.retryable and "HTTP 404" in err.value.message


@pytest.mark.real
def test_hang_past_the_timeout_is_expert_timeout(faulty):
    with pytest.raises(ExpertTimeout):
        run(_collect(expert(faulty, "hang"), timeout=0.5))


@pytest.mark.real
@pytest.mark.parametrize("base", ["reset", "refused"])
def test_broken_connections_are_retryable(faulty, base):
    e = expert(faulty, "reset") if base == "reset" else expert(f"http://127.0.0.1:{free_port()}/v1", "ok")
    with pytest.raises(UpstreamError) as err:
        run(_collect(e))
    assert err.value.retryable and err.value.expert == e.name


@pytest.mark.real
def test_mid_stream_disconnect_after_the_first_chunk(faulty):
    seen, exc = run(_deltas_then_error(expert(faulty, "midstream")))
    assert seen[:1] == ["upstream"] and exc is not None and exc.retryable


def test_request_matches_what_litellm_sends():
    e = Expert(name="q", backend="litellm", model="hosted_vllm/org/qwen", api_base="http://h:8000/v1/",
               stop=("###",), system_prompt="Be brief.")
    url, body = build_request(e, HI, GenParams(max_tokens=7, temperature=0.0, stop=("\n",), stream=True))
    assert url == "http://h:8000/v1/chat/completions" and body["model"] == "org/qwen"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (body["max_tokens"], body["temperature"], body["stop"]) == (7, 0.0, ["###", "\n"])
    assert body["stream_options"] == {"include_usage": True} and "top_p" not in body


def test_the_api_key_never_appears_in_a_message(monkeypatch):
    monkeypatch.setenv("LEAN_TEST_KEY", "sk-very-secret")
    e = Expert(name="k", backend="litellm", model="openai/x", api_base="http://h/v1", api_key_env="LEAN_TEST_KEY")
    assert scrub("bad key sk-very-secret given", e) == "bad key *** given"


@pytest.mark.parametrize("model,api_base,lean", [
    ("openai/x", "http://h/v1", True), ("hosted_vllm/org/m", "http://h/v1", True),
    ("openai/gpt-4o-mini", None, False), ("anthropic/claude-3", "http://h/v1", False), ("gpt-4o", "http://h", False)])
def test_which_experts_take_the_lean_path(model, api_base, lean):
    e = Expert(name="x", backend="litellm", model=model, api_base=api_base)
    assert lean_eligible(e) is lean
    assert BackendPool(load_settings()).kind_for(e) == ("openai" if lean else "litellm")


def test_the_lean_path_can_be_switched_off(monkeypatch):
    e = Expert(name="x", backend="litellm", model="openai/x", api_base="http://h/v1")
    monkeypatch.setenv("CONCLAVE_LEAN_CLIENT", "0")
    assert BackendPool(load_settings()).kind_for(e) == "litellm"
    assert BackendPool(load_settings().with_(lean_client=True), {"litellm": object}).kind_for(e) == "litellm"


def test_expert_records_are_cached_and_writes_through_the_cache_apply_at_once(tmp_path):
    inner = open_store(tmp_path / "s")
    store = CachedStore(inner, ttl=60)
    store.add(Expert(name="a", backend="litellm", model="openai/x", skills=("one",)))
    assert store.get("a").skills == ("one",)
    inner.add(Expert(name="a", backend="litellm", model="openai/x", skills=("two",)), replace=True)
    assert store.get("a").skills == ("one",)          # changed elsewhere: seen after the TTL
    store.add(Expert(name="a", backend="litellm", model="openai/x", skills=("three",)), replace=True)
    assert store.get("a").skills == ("three",)        # changed through the cache: at once
    store.remove("a")
    with pytest.raises(ExpertNotFound):
        store.get("a")
    assert store.describe().startswith("sqlite:")     # everything else passes through


def test_the_expert_list_is_cached_too_and_writes_through_the_cache_apply_at_once(tmp_path):
    """Every routed request reads the list of experts: from the cache within the TTL."""
    import time as _time

    inner = open_store(tmp_path / "s")
    store = CachedStore(inner, ttl=60)
    store.add(Expert(name="a", backend="litellm", model="openai/x"))
    assert [e.name for e in store.list()] == ["a"]
    inner.add(Expert(name="b", backend="litellm", model="openai/x"))
    assert [e.name for e in store.list()] == ["a"]            # added elsewhere: seen after the TTL
    store.list().clear()                                      # a caller's copy: the cache is untouched
    assert [e.name for e in store.list()] == ["a"]
    store.add(Expert(name="c", backend="litellm", model="openai/x"))
    assert [e.name for e in store.list()] == ["a", "b", "c"]  # through the cache: at once
    store.remove("a")
    assert [e.name for e in store.list()] == ["b", "c"]
    short = CachedStore(inner, ttl=0.05)
    assert [e.name for e in short.list()] == ["b", "c"]
    inner.remove("b")
    _time.sleep(0.1)
    assert [e.name for e in short.list()] == ["c"]            # the TTL passed
