"""Expert capabilities: the record and both stores, the CLI flags, the gate (needs/missing) and
capability-aware routing through the HTTP app on the scripted backend."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from experts_registry import open_store
from experts_registry.errors import InvalidRequest, ValidationFailed
from experts_registry.model import Expert
from service.backends import BackendPool
from service.backends.fake import FakeBackend
from service.cli import main
from service.core.protocol import ChatRequest
from service.pipeline.capabilities import check_expert, missing, needs, refuse_none, serviceable

CHAT = "/v1/chat/completions"
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}]
IMAGE = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]


def request(content="hello", **fields) -> ChatRequest:
    return ChatRequest(model="conclave-auto", messages=[{"role": "user", "content": content}], **fields)


def remote(name: str, **kw) -> Expert:
    return Expert(name=name, backend="litellm", model="fake:echo", **kw)


def local(name: str, **kw) -> Expert:
    return Expert(name=name, backend="llamacpp", model="fake:echo", **kw)


# --- the record -----------------------------------------------------------------------------------

def test_defaults_by_backend_and_an_explicit_declaration():
    assert local("a").supports == {"json_schema", "logprobs"}
    assert Expert(name="v", backend="vllm", model="m").supports == {"json_schema", "logprobs"}
    assert remote("r").supports == {"tools", "json_schema", "logprobs", "reasoning"}
    declared = remote("r", capabilities=["Vision", "tools"])
    assert declared.capabilities == ("tools", "vision") and declared.supports == {"tools", "vision"}
    assert remote("none", capabilities=[]).supports == frozenset()


@pytest.mark.parametrize("backend,caps,message", [
    ("litellm", ["audio"], "unknown capability 'audio'"),
    ("llamacpp", ["tools"], "cannot serve 'tools'"),
    ("vllm", ["vision"], "cannot serve 'vision'"),
    ("llamacpp", ["reasoning"], "cannot serve 'reasoning'"),
    ("litellm", "tools", "capabilities is a list"),
])
def test_bad_capabilities_are_refused_naming_the_field(backend, caps, message):
    with pytest.raises(ValidationFailed, match=message) as err:
        Expert(name="e", backend=backend, model="m", capabilities=caps)
    assert err.value.param == "capabilities"


def test_capabilities_round_trip_in_both_stores_and_old_records_still_load(store):
    store.add(remote("declared", capabilities=("vision", "logprobs")))
    store.add(local("undeclared"))
    assert store.get("declared").capabilities == ("vision", "logprobs")
    assert store.get("undeclared").capabilities is None
    assert store.get("undeclared").supports == {"json_schema", "logprobs"}
    old = {"name": "old", "backend": "litellm", "model": "m"}   # a record written before capabilities
    assert Expert.from_json(json.dumps(old)).supports == {"tools", "json_schema", "logprobs", "reasoning"}


def test_redis_store_keeps_an_empty_declaration(redis_prefix, tmp_path):
    from .conftest import REDIS_URL

    store = open_store(tmp_path / "unused", REDIS_URL, prefix=redis_prefix)
    store.add(remote("bare", capabilities=()))
    assert store.get("bare").capabilities == () and store.get("bare").supports == frozenset()


# --- the CLI --------------------------------------------------------------------------------------

def run(*args, ok=True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_cli_declares_shows_and_lists_capabilities():
    run("experts", "add", "gpt", "--backend", "litellm", "--model", "openai/gpt-4o-mini",
        "--capability", "tools", "--capabilities", "vision,logprobs")
    assert json.loads(run("experts", "show", "gpt", "--json"))["capabilities"] == ["tools", "vision", "logprobs"]
    assert "tools,vision,logprobs" in run("experts", "show", "gpt")
    listing = run("experts", "list")
    assert "CAPABILITIES" in listing and "json_schema,logprobs (default)" in listing
    run("experts", "add", "bare", "--backend", "litellm", "--model", "m", "--capability", "none")
    assert json.loads(run("experts", "show", "bare", "--json"))["capabilities"] == []


@pytest.mark.parametrize("caps,message", [
    (["--capability", "audio"], "unknown capability 'audio'"),
    (["--capability", "none,tools"], "give it alone"),
])
def test_cli_refuses_bad_capabilities(caps, message):
    assert message in run("experts", "add", "x", "--backend", "litellm", "--model", "m", *caps, ok=False)


def test_cli_refuses_tools_on_a_local_expert():
    out = run("experts", "add", "x", "--backend", "llamacpp", "--model", "bundled:smollm2", "--capability",
              "tools", ok=False)
    assert "cannot serve 'tools'" in out


def test_help_says_what_each_capability_means():
    text = " ".join(run("experts", "add", "--help").split())
    for words in ("tools (function calling)", "json_schema (JSON mode", "vision (image_url parts)", "logprobs"):
        assert words in text


# --- the gate -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,content,expected", [
    ({}, "hello", set()),
    ({"tools": TOOLS}, "hello", {"tools"}),
    ({"tools": TOOLS, "tool_choice": "none"}, "hello", set()),
    ({"response_format": {"type": "json_object"}}, "hello", {"json_schema"}),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}}, "hi", {"json_schema"}),
    ({"response_format": {"type": "text"}}, "hello", set()),
    ({"logprobs": True, "top_logprobs": 2}, "hello", {"logprobs"}),
    ({"logprobs": False}, "hello", set()),
    ({}, IMAGE, {"vision"}),
    ({"reasoning_effort": "low"}, "hello", {"reasoning"}),
])
def test_needs_reads_the_openai_fields(fields, content, expected):
    assert needs(request(content, **fields)).capabilities == expected


def test_needs_estimates_the_prompt_and_missing_compares_it_with_the_context():
    wants = needs(request("word " * 400))   # 2,000 bytes: ~500 tokens
    assert wants.prompt_tokens == 500
    assert missing(local("short", context_length=256), wants) == ["context"]
    assert missing(local("long", context_length=4096), wants) == []
    assert missing(local("short", context_length=256), wants, context=False) == []


def test_an_expert_named_directly_is_refused_naming_the_field():
    with pytest.raises(InvalidRequest) as err:
        check_expert(local("smol"), needs(request(tools=TOOLS)))
    assert err.value.param == "tools" and err.value.code == "unsupported_parameter"
    assert "'smol'" in err.value.message and "tools (function calling)" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        check_expert(local("smol"), needs(request(IMAGE)))
    assert err.value.param == "messages" and "image" in err.value.message
    with pytest.raises(InvalidRequest) as err:   # the bundled models have no reasoning mode: never ignored
        check_expert(local("smol"), needs(request(reasoning_effort="high")))
    assert err.value.param == "reasoning_effort" and "reasoning" in err.value.message
    check_expert(local("smol"), needs(request(logprobs=True, response_format={"type": "json_object"})))


def test_serviceable_keeps_the_capable_and_says_why_the_others_went():
    pool = [local("smol"), remote("gpt", capabilities=("tools",)), remote("tiny", context_length=64)]
    able, excluded = serviceable(pool, needs(request("x " * 200, tools=TOOLS)))
    assert [e.name for e in able] == ["gpt"]
    assert excluded["smol"] == "no tools (function calling)"
    assert "does not fit its context of 64" in excluded["tiny"]


def test_refusal_names_what_most_candidates_lack():
    err = refuse_none([local("a"), local("b"), remote("c", context_length=64)], needs(request("x " * 200, tools=TOOLS)))
    assert err.param == "tools" and "a: no tools" in err.message and "c: the prompt" in err.message
    err = refuse_none([remote("c", context_length=64)], needs(request("x " * 200)))
    assert err.param == "messages" and err.code == "context_length_exceeded"


# --- routing through the HTTP app ----------------------------------------------------------------

@pytest.fixture
def caps_client(tmp_path, client_for):
    """Two experts on the scripted backend: 'plain' (local, no tools), 'agent' (remote, declares tools)."""
    from service.core.config import load_settings
    from service.pipeline.gateway import Gateway

    settings = load_settings().with_(expert_timeout=5.0, generalist="plain")
    store = open_store(tmp_path / "caps")
    store.add(local("plain", skills=("general", "weather")))
    store.add(remote("agent", capabilities=("tools",), context_length=64))
    fake = {kind: (lambda s: FakeBackend()) for kind in ("llamacpp", "litellm")}
    return client_for(Gateway(settings, store, BackendPool(settings, fake)), router="tags")


def ask(client, content="what is the weather in Paris?", model="conclave-auto", **fields):
    return client.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": content}], **fields})


def test_routed_tools_always_go_to_the_tool_capable_expert(caps_client):
    assert ask(caps_client).json()["conclave"]["expert"] == "plain"   # tags prefers 'plain' (skills, generalist)
    for _ in range(3):
        body = ask(caps_client, tools=TOOLS).json()
        assert body["conclave"]["expert"] == "agent"
        assert body["conclave"]["route"]["excluded"] == {"plain": "no tools (function calling)"}


def test_routed_request_no_expert_can_serve_is_a_400_naming_the_capability(caps_client):
    r = ask(caps_client, tools=TOOLS, logprobs=True)   # 'agent' declares tools but not logprobs
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "tools"
    assert "plain: no tools" in err["message"] and "agent: no logprobs" in err["message"]


def test_a_prompt_longer_than_an_experts_context_never_goes_to_it(caps_client):
    body = ask(caps_client, "weather " * 100).json()   # ~200 tokens: 'agent' holds 64
    assert body["conclave"]["expert"] == "plain"
    assert "does not fit its context of 64" in body["conclave"]["route"]["excluded"]["agent"]
    r = ask(caps_client, "weather " * 100, tools=TOOLS)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"


def test_a_request_naming_an_expert_without_the_capability_is_a_400(caps_client):
    r = ask(caps_client, model="plain", tools=TOOLS)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "tools" and "'plain'" in err["message"] and err["code"] == "unsupported_parameter"
    assert ask(caps_client, model="agent", tools=TOOLS).status_code == 200
    r = ask(caps_client, IMAGE, model="agent")
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_admin_route_declares_capabilities_and_refuses_bad_ones(fake_gateway, client_for):
    from experts_registry.keys import new_key

    secret, key = new_key("ops", "admin")
    fake_gateway.store.put_key(key)
    client = client_for(fake_gateway, key_cache_seconds=0.0)
    h = {"Authorization": f"Bearer {secret}"}
    record = {"name": "seer", "backend": "litellm", "model": "openai/x", "capabilities": ["vision", "tools"]}
    assert client.post("/admin/experts", json=record, headers=h).json()["capabilities"] == ["tools", "vision"]
    assert fake_gateway.store.get("seer").supports == {"tools", "vision"}
    for caps in (["telepathy"], 5):
        r = client.post("/admin/experts", json={**record, "name": "bad", "capabilities": caps}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["param"] == "capabilities"
    r = client.post("/admin/experts", json={**record, "name": "bad", "capabilities": ["tools"]})
    assert r.status_code in (401, 403)   # registry changes stay admin-only


def test_a_trained_router_that_knows_none_of_the_capable_experts_hands_over_to_declared(caps_client):
    import numpy as np

    from router.encoder import HashingEncoder
    from router.outcomes import Outcomes
    from router.training import train_router
    from service.pipeline.routing import router_dir

    texts = ("what is the weather", "tell me a joke") * 3   # knn trained on 'plain' alone
    enc = HashingEncoder(64)
    outcomes = Outcomes(experts=("plain",), correct=np.ones((len(texts), 1), dtype=np.float32), texts=texts,
                        embeddings=enc.encode(list(texts)), active_params={"plain": 1.0},
                        question_ids=tuple(range(len(texts))))
    train_router("knn", outcomes, router_dir(caps_client.app.state.gateway.settings) / "knn", encoder=enc)
    assert ask(caps_client, conclave={"router": "knn"}).json()["conclave"]["expert"] == "plain"
    body = ask(caps_client, tools=TOOLS, conclave={"router": "knn"}).json()
    assert body["conclave"]["expert"] == "agent" and body["conclave"]["route"]["router"] == "declared"
    assert "knn router knows none" in body["conclave"]["route"]["reason"]
