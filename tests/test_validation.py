"""Request validation as OpenAI's API does it: every invalid chat request is a 400
``invalid_request_error`` whose ``param`` names the field (on the scripted fake backend)."""

from __future__ import annotations

import json

import pytest

from .test_api import CHAT, assert_openai_error, body

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}


@pytest.fixture
def client(fake_gateway, client_for):
    return client_for(fake_gateway)


def turn(**fields):
    return body(messages=[{"role": "user", "content": "hi"}, fields])


def parts(*items):
    return body(messages=[{"role": "user", "content": list(items)}])


INVALID = [
    # strict types: no coercion from strings
    (body(max_tokens="10"), "max_tokens"), (body(stream="yes"), "stream"), (body(temperature="0.5"), "temperature"),
    (body(max_completion_tokens=1.5), "max_completion_tokens"), (body(seed="1"), "seed"),
    (body(user=5), "user"), (body(logprobs="true"), "logprobs"), (body(model=5), "model"),
    # ranges
    (body(frequency_penalty=100), "frequency_penalty"), (body(presence_penalty=-2.5), "presence_penalty"),
    (body(temperature=2.1), "temperature"), (body(top_p=0), "top_p"), (body(top_p=1.5), "top_p"),
    (body(logprobs=True, top_logprobs=21), "top_logprobs"), (body(top_logprobs=2), "top_logprobs"),
    (body(logprobs=False, top_logprobs=2), "top_logprobs"), (body(n=2), "n"), (body(n="1"), "n"),
    (body(logit_bias={"hello": 1}), "logit_bias"), (body(logit_bias={"50256": 101}), "logit_bias"),
    (body(logit_bias={"50256": "1"}), "logit_bias"), (body(logit_bias=[1]), "logit_bias"),
    # tools and tool_choice
    (body(tools=[]), "tools"), (body(tools=[{"type": "retrieval"}]), "tools[0].type"),
    (body(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools[0].function.name"),
    (body(tools=[{"type": "function", "function": {"name": "x" * 65}}]), "tools[0].function.name"),
    (body(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
     "tools[0].function.parameters"),
    (body(tools=[{"type": "function", "function": {"name": "f", "colour": 1}}]), "tools[0].function.colour"),
    (body(tools=[{"type": "function"}]), "tools[0].function"), (body(tools=["f"]), "tools[0]"),
    (body(tool_choice="auto"), "tool_choice"), (body(tools=[TOOL], tool_choice="always"), "tool_choice"),
    (body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "other"}}),
     "tool_choice.function.name"),
    (body(tools=[TOOL], tool_choice={"type": "function"}), "tool_choice.function"),
    (body(parallel_tool_calls=True), "parallel_tool_calls"),
    (body(tools=[TOOL], parallel_tool_calls="yes"), "parallel_tool_calls"),
    # response_format
    (body(response_format={"type": "xml"}), "response_format.type"),
    (body(response_format={"type": "json_schema"}), "response_format.json_schema"),
    (body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
     "response_format.json_schema.name"),
    (body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": "object"}}),
     "response_format.json_schema.schema"),
    (body(response_format={"type": "json_object", "schema": {}}), "response_format.schema"),
    (body(response_format="json"), "response_format"),
    # content parts and messages
    (parts({"type": "video", "url": "x"}), "messages[0].content[0].type"),
    (parts({"type": "text", "text": "a"}, {"type": "image"}), "messages[0].content[1].type"),
    (parts({"type": "text"}), "messages[0].content[0].text"),
    (parts({"type": "text", "text": 5}), "messages[0].content[0].text"),
    (parts({"type": "image_url", "image_url": {}}), "messages[0].content[0].image_url.url"),
    (parts({"type": "image_url", "image_url": {"url": "x", "detail": "max"}}),
     "messages[0].content[0].image_url.detail"),
    (parts({"type": "input_audio", "input_audio": {"data": "AAA"}}), "messages[0].content[0].input_audio.format"),
    (parts({"type": "input_audio", "input_audio": {"data": "AAA", "format": "ogg"}}),
     "messages[0].content[0].input_audio.format"),
    (parts(), "messages[0].content"), (parts("hi"), "messages[0].content[0]"),
    (body(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages[0].content[0].type"),
    (turn(role="tool", content="42"), "messages[1].tool_call_id"),
    (turn(role="user", content="x", tool_call_id="c1"), "messages[1].tool_call_id"),
    (turn(role="user", content="x", tool_calls=[]), "messages[1].tool_calls"),
    (turn(role="assistant", content=None), "messages[1].content"),
    (turn(role="assistant", tool_calls=[{"id": "c", "type": "function", "function": {"name": "f"}}]),
     "messages[1].tool_calls[0].function.arguments"),
    (turn(role="user", content="x", colour="red"), "messages[1].colour"),
    (turn(role="wizard", content="x"), "messages[1].role"), (turn(role="user", content=7), "messages[1].content"),
    # metadata, reasoning_effort, stream_options
    (body(metadata={str(i): "v" for i in range(17)}), "metadata"), (body(metadata={"a": 1}), "metadata"),
    (body(reasoning_effort="max"), "reasoning_effort"), (body(stream_options={"include_usage": True}), "stream_options"),
    (body(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    # unknown and unsupported fields
    (body(top_k=5), "top_k"), (body(functions=[{"name": "f"}]), "functions"), (body(store=True), "store"),
    (body(modalities=["text", "audio"]), "modalities"), (body(conclave={"evil": 1}), "conclave.evil"),
]


@pytest.mark.parametrize("payload,param", INVALID, ids=[p for _, p in INVALID])
def test_invalid_requests_are_400_naming_the_field(client, payload, param):
    err = assert_openai_error(client.post(CHAT, json=payload), 400, param=param)
    assert err["type"] == "invalid_request_error"


def test_unknown_fields_say_so_as_openai_does(client):
    err = assert_openai_error(client.post(CHAT, json=body(top_k=5)), 400, "unknown_parameter", "top_k")
    assert err["message"] == "Unrecognized request argument supplied: top_k"


def test_the_forbidden_routing_fields_keep_their_own_refusal(client):
    err = assert_openai_error(client.post(CHAT, json=body(api_base="http://x")), 400, param="api_base")
    assert "decides where traffic goes" in err["message"]


VALID = [
    body(max_tokens=10, stream=False, temperature=1, top_p=1, presence_penalty=-2, frequency_penalty=2, seed=3),
    body(logprobs=True, top_logprobs=0), body(logprobs=True, top_logprobs=20), body(logit_bias={"50256": -100}),
    body(tools=[TOOL], tool_choice="required", parallel_tool_calls=False),
    body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    body(response_format={"type": "text"}), body(response_format={"type": "json_object"}), body(response_format=SCHEMA),
    body(metadata={"team": "a"}, user="u-1", reasoning_effort="low", max_completion_tokens=20),
    body(store=False, modalities=["text"], service_tier="auto"),
    parts({"type": "text", "text": "look: "}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}),
    body(messages=[{"role": "user", "content": "weather?"},
                   {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                       {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], tools=[TOOL]),
]


@pytest.mark.parametrize("payload", VALID)
def test_valid_requests_pass(client, payload):
    from service.core.protocol import ChatRequest

    ChatRequest.model_validate_json(json.dumps(payload))   # raises on any validation error
    r = client.post(CHAT, json=payload)
    # the scripted local expert answers, or names the field it cannot serve (service/pipeline/honoured.py)
    assert r.status_code == 200 or r.json()["error"]["code"] == "unsupported_parameter", r.text
