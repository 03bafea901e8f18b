"""Issue 17 acceptance, remote experts: the real server (`conclave serve` in a subprocess), the official
``openai`` client, and the fake OpenAI-compatible upstream (tests/fake_upstream.py) as the expert, on
both client paths (the lean aiohttp client and litellm). Tools round-trip tool_calls (streamed and
not, then a follow-up turn with the tool's result), json_schema answers validate against the schema,
logprobs come back per token with their alternatives, and every field reaches the upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import jsonschema
import openai
import pytest

from .servers import running_gateway, start_fake_upstream

pytestmark = pytest.mark.real
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {
    "zone": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["zone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris for 2 days?"}]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"},
                                           "capital": {"type": "boolean"}, "tags": {"type": "array",
                                                                                     "items": {"type": "string"}}},
          "required": ["name", "population", "capital", "tags"], "additionalProperties": False}


@pytest.fixture(scope="module")
def upstream():
    proc, base = start_fake_upstream()
    yield base
    proc.kill()


@pytest.fixture(scope="module", params=["lean", "litellm"])
def gateway(request, upstream, tmp_path_factory):
    """(openai client, fake upstream URL): `conclave serve` with the expert "remote" = the fake upstream."""
    home = tmp_path_factory.mktemp(f"fields-{request.param}")
    env = {**os.environ, "CONCLAVE_HOME": str(home)}
    for name, model in (("remote", "openai/ok"), ("remote2", "openai/ok2"), ("remote3", "openai/ok3")):
        subprocess.run([sys.executable, "-m", "service.cli", "experts", "add", name, "--backend", "litellm",
                        "--model", model, "--api-base", upstream + "/v1", "--skill", "weather"]
                       + (["--capability", "tools,json_schema,logprobs,vision,reasoning"] if name == "remote" else []),
                       check=True, capture_output=True, env=env)
    subprocess.run([sys.executable, "-m", "service.cli", "experts", "add", "deaf", "--backend", "litellm",
                    "--model", "openai/deaf", "--api-base", upstream + "/v1", "--skill", "deaf"], check=True,
                   capture_output=True, env=env)   # no "weather" skill: routed requests about the weather skip it
    for bundled in ("smollm2", "gemma-3-270m"):   # routed requests (k = 3) go to the three remote experts only
        subprocess.run([sys.executable, "-m", "service.cli", "experts", "remove", bundled], check=True,
                       capture_output=True, env=env)
    with running_gateway(home, home / "server.log", CONCLAVE_LEAN_CLIENT="1" if request.param == "lean" else "0",
                         CONCLAVE_ROUTER="tags") as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60), upstream


def sent(upstream: str, model: str = "ok") -> dict:
    """The body the gateway last sent the fake upstream for ``model``."""
    return httpx.get(upstream, timeout=10).json()["last"][model]


def test_tools_non_streaming_return_tool_calls(gateway):
    client, upstream = gateway
    out = client.chat.completions.create(model="remote", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                         parallel_tool_calls=False)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    body = sent(upstream)
    assert body["tools"] == [WEATHER, TIME] and body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False


def test_tools_streaming_assemble_to_the_same_call(gateway):
    client, _ = gateway
    chunks = list(client.chat.completions.create(model="remote", messages=ASK, tools=[WEATHER, TIME], stream=True,
                                                 tool_choice={"type": "function", "function": {"name": "get_time"}}))
    pieces = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    assert len(pieces) >= 3                      # the call arrives split over several chunks
    assert pieces[0].id and pieces[0].function.name == "get_time" and all(p.index == 0 for p in pieces)
    assert all(p.id is None and p.function.name is None for p in pieces[1:])
    args = "".join(p.function.arguments or "" for p in pieces)
    assert json.loads(args) == {"zone": "UTC"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_a_follow_up_turn_with_the_tool_result(gateway):
    client, upstream = gateway
    first = client.chat.completions.create(model="remote", messages=ASK, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    history = ASK + [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = client.chat.completions.create(model="remote", messages=history, tools=[WEATHER])
    assert second.choices[0].message.content == "the tool said: sunny, 21 C"
    assert second.choices[0].finish_reason == "stop"
    forwarded = sent(upstream)["messages"]
    assert forwarded[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}
    assert forwarded[-2]["role"] == "assistant" and forwarded[-2]["tool_calls"][0]["id"] == call.id


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_answers_validate_against_the_schema(gateway, stream):
    client, upstream = gateway
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    out = client.chat.completions.create(model="remote", messages=ASK, response_format=fmt, stream=stream)
    text = "".join(c.choices[0].delta.content or "" for c in out if c.choices) if stream else out.choices[0].message.content
    jsonschema.validate(json.loads(text), SCHEMA)
    assert sent(upstream)["response_format"] == fmt


def test_logprobs_per_token_with_alternatives(gateway):
    client, _ = gateway
    out = client.chat.completions.create(model="remote", messages=ASK, logprobs=True, top_logprobs=3)
    entries = out.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == out.choices[0].message.content == "upstream ok"
    assert all(len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token and e.logprob <= 0 for e in entries)
    assert bytes(entries[0].bytes).decode() == entries[0].token


def test_logprobs_streamed_token_by_token(gateway):
    client, _ = gateway
    chunks = list(client.chat.completions.create(model="remote", messages=ASK, logprobs=True, top_logprobs=2,
                                                 stream=True))
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in entries] == ["upstream", " ok"] and all(len(e.top_logprobs) == 2 for e in entries)


def test_every_other_field_reaches_the_upstream(gateway):
    client, upstream = gateway
    client.chat.completions.create(model="remote", messages=ASK, presence_penalty=0.5, frequency_penalty=-1,
                                   logit_bias={"50256": -100}, user="user-7", metadata={"team": "search"},
                                   reasoning_effort="low", max_completion_tokens=12, seed=3)
    body = sent(upstream)
    assert (body["presence_penalty"], body["frequency_penalty"], body["logit_bias"]) == (0.5, -1, {"50256": -100})
    assert (body["user"], body["metadata"], body["reasoning_effort"]) == ("user-7", {"team": "search"}, "low")
    assert (body["max_completion_tokens"], body["seed"]) == (12, 3) and "max_tokens" not in body
    client.chat.completions.create(model="remote", messages=ASK, max_tokens=7)
    assert sent(upstream)["max_tokens"] == 7 and "max_completion_tokens" not in sent(upstream)


def test_image_parts_reach_a_remote_expert_as_sent(gateway):
    client, upstream = gateway
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]
    client.chat.completions.create(model="remote", messages=[{"role": "user", "content": content}])
    assert sent(upstream)["messages"][-1]["content"] == content


def test_k3_tools_vote_among_the_experts_calls(gateway):
    client, _ = gateway
    raw = client.chat.completions.with_raw_response.create(
        model="conclave-auto", messages=ASK, tools=[WEATHER], extra_body={"conclave": {"k": 3}})
    out = raw.parse()
    assert out.choices[0].finish_reason == "tool_calls" and out.choices[0].message.tool_calls[0].function.name == "get_weather"
    agg = out.to_dict()["conclave"]["aggregation"]
    assert agg["aggregator"] == "tool-call-vote" and list(agg["votes"].values()) == [3]
    assert raw.headers["x-conclave-calls"] == "3"


def test_k3_tools_vote_streamed(gateway):
    client, _ = gateway
    chunks = list(client.chat.completions.create(model="conclave-auto", messages=ASK, tools=[WEATHER], stream=True,
                                                 extra_body={"conclave": {"k": 3}}))
    pieces = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    assert pieces[0].id and pieces[0].function.name == "get_weather"
    jsonschema.validate(json.loads("".join(p.function.arguments or "" for p in pieces)), WEATHER["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[0].to_dict()["conclave"]["aggregation"]["aggregator"] == "tool-call-vote"


def test_k3_json_mode_votes_among_valid_json(gateway):
    client, _ = gateway
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    out = client.chat.completions.create(model="conclave-auto", messages=ASK, response_format=fmt,
                                         extra_body={"conclave": {"k": 3}})
    jsonschema.validate(json.loads(out.choices[0].message.content), SCHEMA)
    assert out.to_dict()["conclave"]["aggregation"]["aggregator"] == "json-vote"


@pytest.mark.parametrize("kwargs,param", [
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}, "extra_body": {"conclave": {"k": 2, "aggregator": "synthesis"}}},
     "conclave.aggregator"),
])
def test_k_above_1_refuses_what_it_cannot_aggregate(gateway, kwargs, param):
    client, _ = gateway
    kwargs.setdefault("extra_body", {"conclave": {"k": 2}})
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="conclave-auto", messages=ASK, **kwargs)
    assert err.value.status_code == 400 and err.value.body["param"] == param


@pytest.mark.parametrize("kwargs,param", [
    ({"max_tokens": "10"}, "max_tokens"), ({"frequency_penalty": 100}, "frequency_penalty"),
    ({"top_logprobs": 2}, "top_logprobs"), ({"tools": [WEATHER], "tool_choice": {"type": "function",
                                                                              "function": {"name": "nope"}}},
                                            "tool_choice.function.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ({"n": 2}, "n"), ({"extra_body": {"top_k": 3}}, "top_k"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]}, "messages[0].content[0].type"),
])
def test_invalid_requests_are_400_through_the_official_client(gateway, kwargs, param):
    client, _ = gateway
    kwargs.setdefault("messages", ASK)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="remote", **kwargs)
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["param"] == param


def test_stream_yes_is_refused(gateway):
    client, _ = gateway
    r = httpx.post(str(client.base_url) + "chat/completions", timeout=30,
                   json={"model": "remote", "messages": ASK, "stream": "yes"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The real server with only the bundled llama.cpp expert smollm2."""
    home = tmp_path_factory.mktemp("fields-local")
    env = {**os.environ, "CONCLAVE_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "service.cli", "experts", "remove", "gemma-3-270m"], check=True,
                   capture_output=True, env=env)
    with running_gateway(home, home / "server.log") as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
])
def test_a_local_text_expert_refuses_image_and_audio_parts(local, part):
    content = [{"type": "text", "text": "What is this?"}, part]
    for model in ("smollm2", "conclave-auto"):
        with pytest.raises(openai.BadRequestError) as err:
            local.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], max_tokens=4)
        assert err.value.body["param"].startswith("messages") and "smollm2" in err.value.body["message"]


def test_a_local_expert_reads_text_parts_and_answers(local):
    content = [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]
    out = local.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": content}],
                                        max_tokens=4, temperature=0)
    assert out.choices[0].message.content.strip()


@pytest.mark.parametrize("kwargs,param", [
    ({"logprobs": True}, "logprobs"),
    ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER, TIME], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
])
def test_an_expert_that_ignores_a_field_is_an_error_not_a_silent_change(gateway, kwargs, param):
    """The "deaf" upstream answers 200 with plain text whatever it was asked."""
    client, _ = gateway
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="deaf", messages=ASK, **kwargs)
    assert err.value.status_code == 502 and err.value.body["param"] == param and "'deaf'" in err.value.body["message"]
    chunks = client.chat.completions.create(model="deaf", messages=ASK, stream=True, **kwargs)
    with pytest.raises(openai.APIError) as err:   # the text streamed, then the error in-band, and no [DONE]
        list(chunks)
    assert param in str(err.value)
    assert client.chat.completions.create(model="deaf", messages=ASK).choices[0].message.content == "upstream ok"


@pytest.mark.parametrize("kwargs,param", [
    ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [WEATHER], "tool_choice": "required"}, "tools"),
    ({"tools": [WEATHER]}, "tools"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
])
def test_a_local_expert_honours_a_field_or_refuses_it_naming_it(local, kwargs, param):
    """Acceptance: against a local expert the same requests either work or give a 400 naming the field."""
    try:
        out = local.chat.completions.create(model="smollm2", messages=ASK, max_tokens=24, temperature=0, **kwargs)
    except openai.BadRequestError as err:
        assert err.body["param"] in (param, "tool_choice") and "smollm2" in err.body["message"]
        return
    choice = out.choices[0]
    if "logprobs" in kwargs:
        assert choice.logprobs and len(choice.logprobs.content[0].top_logprobs) == 2
    elif "response_format" in kwargs:
        assert choice.finish_reason == "length" or isinstance(json.loads(choice.message.content), dict)
    else:
        assert choice.message.tool_calls
