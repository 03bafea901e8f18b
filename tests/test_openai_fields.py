"""The OpenAI fields beyond sampling, piece by piece: what each client path sends upstream (the lean
client's body, litellm's arguments), how answers (whole and streamed) become Deltas, and the k > 1
vote among structured answers. End to end through the real server: tests/test_openai_fields_real.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from experts_registry.errors import InvalidRequest, UpstreamError
from experts_registry.model import Expert
from service.backends import GenParams
from service.backends.litellm_backend import LiteLLMBackend, _deltas, _kwargs
from service.backends.openai_backend import _whole, build_request
from service.core.backend import Generation
from service.core.openai_fields import stream_calls, upstream_fields
from service.pipeline.structured import ask_and_vote, structured

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
REMOTE = Expert(name="r", backend="litellm", model="openai/m", api_base="http://h/v1", system_prompt="Be brief.")
BASE = Expert(name="b", backend="litellm", model="openai/m", api_base="http://h/v1", prompt_style="completion")
HISTORY = [{"role": "system", "content": [{"type": "text", "text": "Use tools."}]},
           {"role": "user", "content": [{"type": "text", "text": "hi"},
                                        {"type": "image_url", "image_url": {"url": "data:,x"}}]},
           {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
           {"role": "tool", "tool_call_id": "c1", "content": "42"}]
FIELDS = dict(tools=[TOOL], tool_choice="required", parallel_tool_calls=False, logprobs=True, top_logprobs=2,
              presence_penalty=0.5, frequency_penalty=-0.5, logit_bias={"7": 5}, user="u", reasoning_effort="low",
              metadata={"k": "v"}, response_format={"type": "json_object"})


def test_the_lean_client_sends_every_field_and_the_turns_as_sent():
    _, body = build_request(REMOTE, HISTORY, GenParams(stream=False, **FIELDS))
    assert {k: body[k] for k in FIELDS} == FIELDS
    assert body["messages"][0] == {"role": "system", "content": "Be brief.\n\nUse tools."}
    assert body["messages"][1:] == HISTORY[1:]


def test_litellm_gets_every_field_with_its_own_conventions():
    kw = _kwargs(REMOTE, GenParams(**FIELDS), timeout=5)
    assert {k: kw[k] for k in FIELDS if k != "metadata"} == {k: v for k, v in FIELDS.items() if k != "metadata"}
    assert kw["extra_body"] == {"metadata": {"k": "v"}} and "metadata" not in kw   # litellm's own metadata is for callbacks
    assert kw["allowed_openai_params"] == ["user"]       # else litellm drops user for non-catalogue models
    assert kw["_skip_mcp_handler"] is True               # else litellm routes tools through its MCP bridge
    plain = _kwargs(REMOTE, GenParams(), timeout=5)
    assert not {"tools", "extra_body", "allowed_openai_params", "_skip_mcp_handler", "logprobs"} & set(plain)


@pytest.mark.parametrize("field", ["tools", "logprobs", "response_format", "reasoning_effort"])
def test_a_completion_style_expert_refuses_the_chat_only_fields(field):
    with pytest.raises(InvalidRequest) as err:
        upstream_fields(BASE, GenParams(**{field: FIELDS[field]}))
    assert err.value.param == field and "'b'" in err.value.message


def test_the_token_limit_goes_upstream_under_the_name_the_client_used():
    params = GenParams(max_tokens=9, limit_field="max_completion_tokens")
    assert build_request(REMOTE, HISTORY, params)[1]["max_completion_tokens"] == 9
    assert "max_tokens" not in build_request(REMOTE, HISTORY, params)[1]
    assert _kwargs(REMOTE, params, timeout=5)["max_completion_tokens"] == 9
    assert build_request(BASE, HISTORY[-1:], params)[1]["max_tokens"] == 9    # /completions knows only max_tokens


def test_a_completion_style_expert_takes_penalties_and_text_format():
    fields = upstream_fields(BASE, GenParams(presence_penalty=1.0, logit_bias={"1": 1},
                                             response_format={"type": "text"}))
    assert fields == {"presence_penalty": 1.0, "logit_bias": {"1": 1}}


def test_a_whole_answer_with_tool_calls_and_logprobs():
    entry = {"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}
    d = _whole({"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
        "logprobs": {"content": [entry]}, "finish_reason": "tool_calls"}]})
    assert d.finish_reason == "tool_calls" and d.text == "" and d.logprobs == [entry]
    assert d.tool_calls == [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]


def test_streamed_pieces_keep_openais_shape():
    pieces = [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}},
              {"index": 0, "id": None, "type": "function", "function": {"name": None, "arguments": "{}"}}]
    assert stream_calls(pieces) == [pieces[0], {"index": 0, "function": {"arguments": "{}"}}]


def test_litellm_stream_chunks_become_deltas():
    from litellm.types.utils import ModelResponseStream

    def event(delta, finish=None, logprobs=None):
        return ModelResponseStream(**{"id": "x", "created": 0, "model": "m", "object": "chat.completion.chunk",
                                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                   "logprobs": logprobs}]})

    entry = {"token": "hi", "logprob": -0.5, "bytes": [104, 105], "top_logprobs": []}
    chunks = [event({"role": "assistant", "tool_calls": [{"index": 0, "id": "c", "type": "function",
                                                          "function": {"name": "f", "arguments": ""}}]}),
              event({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
              event({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
              event({"content": "hi"}, logprobs={"content": [entry]}), event({}, "tool_calls")]

    async def stream():
        for c in chunks:
            yield c

    async def run():
        return [d async for d in _deltas(stream())]

    deltas = asyncio.run(run())
    assert deltas[0].tool_calls[0]["id"] == "c" and deltas[0].tool_calls[0]["function"]["name"] == "f"
    assert "".join(d.tool_calls[0]["function"]["arguments"] for d in deltas if d.tool_calls) == "{\"a\":1}"
    assert deltas[3].text == "hi" and deltas[3].logprobs[0]["token"] == "hi" and deltas[-1].finish_reason == "tool_calls"


def test_litellm_refusing_a_field_for_its_provider_is_a_400_naming_the_expert():
    """litellm raises UnsupportedParamsError (its status 500) before any request: a 400, not a retried 502."""
    expert = Expert(name="claude", backend="litellm", model="anthropic/claude-3-haiku-20240307")

    async def run():
        return [d async for d in LiteLLMBackend(timeout=5).stream(expert, [{"role": "user", "content": "hi"}],
                                                                  GenParams(logit_bias={"1": 5}))]

    with pytest.raises(InvalidRequest) as err:
        asyncio.run(run())
    assert "'claude'" in err.value.message and "logit_bias" in err.value.message


def scripted(answers: dict):
    """A gateway ``call`` whose experts answer the given Generations (or raise UpstreamError)."""
    async def call(expert, messages, params):
        gen = answers[expert.name]
        if gen is None:
            raise UpstreamError("down", expert=expert.name)
        yield from_gen(gen)
    return call


def from_gen(gen: Generation):
    from service.backends import Delta
    from service.core.openai_fields import indexed_calls

    return Delta(gen.text, gen.finish_reason, {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                 indexed_calls(gen.tool_calls))


def call_of(name, args):
    return [{"id": f"id-{name}", "type": "function", "function": {"name": name, "arguments": args}}]


def vote(answers, params):
    experts = [(Expert(name=n, backend="litellm", model="openai/x"), 1.0 - i / 10) for i, n in enumerate(answers)]

    async def run():
        agg, winner, stream = await ask_and_vote(scripted(answers), experts, [], params)
        return agg, winner, [d async for d in stream]
    return asyncio.run(run())


def test_tool_calls_vote_on_name_and_canonical_arguments():
    answers = {"a": Generation("", "tool_calls", tool_calls=call_of("f", '{"x": 1, "y": 2}')),
               "b": Generation("", "tool_calls", tool_calls=call_of("g", "{}")),
               "c": Generation("", "tool_calls", tool_calls=call_of("f", '{"y":2,"x":1}')),
               "d": None}
    agg, winner, deltas = vote(answers, GenParams(tools=[TOOL]))
    assert winner == "a" and agg.detail["votes"][agg.detail["answer"]] == 2 and agg.detail["failed"] == {"d": "down"}
    assert deltas[0].tool_calls[0]["function"]["name"] == "f" and deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage["total_tokens"] == 6


def test_json_mode_votes_among_answers_that_parse():
    answers = {"a": Generation("not json", "stop"), "b": Generation('{"n": 1}', "stop"),
               "c": Generation('{ "n" : 1 }', "stop"), "d": Generation('{"n": 2}', "stop")}
    agg, winner, deltas = vote(answers, GenParams(response_format={"type": "json_object"}))
    assert winner == "b" and deltas[0].text == '{"n": 1}' and agg.detail["votes"] == {'{"n":1}': 2, '{"n":2}': 1}
    assert "a" in agg.detail["failed"]


def test_json_mode_with_no_valid_json_is_a_502_naming_the_experts():
    with pytest.raises(UpstreamError) as err:
        vote({"a": Generation("nope", "stop"), "b": Generation("", "stop")}, GenParams(response_format={"type": "json_object"}))
    assert "a" in err.value.message and "b" in err.value.message


@pytest.mark.parametrize("params,aggregator,adaptive,param", [
    (GenParams(logprobs=True), "vote", False, "logprobs"),
    (GenParams(tools=[TOOL]), "synthesis", False, "conclave.aggregator"),
    (GenParams(response_format={"type": "json_schema"}), "vote", True, "conclave.k"),
])
def test_what_k_above_1_cannot_aggregate_is_refused(params, aggregator, adaptive, param):
    with pytest.raises(InvalidRequest) as err:
        structured(params, aggregator, adaptive)
    assert err.value.param == param


def test_plain_requests_keep_the_text_aggregators():
    assert structured(GenParams(response_format={"type": "text"}), "synthesis", True) is False
    assert structured(GenParams(tools=[TOOL]), "first", False) is True


def test_the_fake_upstream_answers_json_that_validates(tmp_path):
    import jsonschema

    from .fake_upstream import answer

    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number"}},
                                               "b": {"enum": ["x", "y"]}}, "required": ["a", "b"]}
    text, calls, _ = answer({"messages": [{"role": "user", "content": "q"}],
                             "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}})
    jsonschema.validate(json.loads(text), schema)
    assert calls is None


@pytest.mark.parametrize("kind", ["image_url", "input_audio"])
def test_a_text_prompt_refuses_image_and_audio_parts_naming_them(kind):
    from service.core.prompting import chat_messages, completion_prompt

    part = {"type": kind, kind: {"url": "data:,x"} if kind == "image_url" else {"data": "AA", "format": "wav"}}
    turns = [{"role": "user", "content": "earlier"}, {"role": "user", "content": [{"type": "text", "text": "q"}, part]}]
    local = Expert(name="local", backend="llamacpp", model="bundled:smollm2")
    for render in (chat_messages, completion_prompt):
        with pytest.raises(InvalidRequest) as err:
            render(local, turns)
        assert err.value.param == "messages[1].content[1].type" and "'local'" in err.value.message
    assert chat_messages(local, [turns[1] | {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) \
        == [{"role": "user", "content": "ab"}]


@pytest.mark.parametrize("params,text,calls,logprobs,finish,ignored", [
    (GenParams(logprobs=True), "hi", [], False, "stop", "logprobs"),
    (GenParams(logprobs=True), "", call_of("f", "{}"), False, "tool_calls", None),   # tool calls have no tokens
    (GenParams(tools=[TOOL], tool_choice="required"), "text", [], False, "stop", "tool_choice"),
    (GenParams(tools=[TOOL], tool_choice="auto"), "text", [], False, "stop", None),
    (GenParams(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "f"}}), "", call_of("g", "{}"),
     False, "tool_calls", "tool_choice"),
    (GenParams(response_format={"type": "json_object"}), "{\"a\": 1}", [], False, "stop", None),
    (GenParams(response_format={"type": "json_object"}), "sure! {", [], False, "stop", "response_format"),
    (GenParams(response_format={"type": "json_object"}), "{\"a\": ", [], False, "length", None),   # cut by max_tokens
])
def test_what_counts_as_an_ignored_field(params, text, calls, logprobs, finish, ignored):
    from service.pipeline.honoured import _ignored

    found = _ignored(params, text, calls, logprobs, finish)
    assert (found.split(" ")[0] if found else None) == ignored
