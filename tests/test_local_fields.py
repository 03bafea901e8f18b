"""The local workers and the OpenAI fields beyond sampling: the pure parts (stop strings, logprob
entries, JSON mode, logit_bias, vLLM's SamplingParams fields), then llama.cpp for real with SmolLM2."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from experts_registry.bundled import BUNDLED
from experts_registry.errors import InvalidRequest
from service.core.backend import GenParams
from service.workers.base import Job
from service.workers.fields import json_mode, refuse_tools, token_bias
from service.workers.llamacpp_stream import Text
from service.workers.vllm_fields import logprob_entries, sampling_fields

SMOL = BUNDLED["smollm2"]
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"]}


def feed(text: Text, pieces: list[bytes]) -> tuple[str, list[str]]:
    out, tokens = [], []
    for i, piece in enumerate(pieces):
        text.add(piece, {"token": str(i)})
        chunk, entries = text.release()
        out.append(chunk)
        tokens += [e["token"] for e in entries]
        if text.stopped:
            break
    chunk, entries = text.release(final=True)
    return "".join(out) + chunk, tokens + [e["token"] for e in entries]


def test_text_cuts_at_a_stop_string_and_drops_the_tokens_after_it():
    out, tokens = feed(Text(["\nQ:"]), [b"Paris", b".", b"\n", b"Q", b":", b" next"])
    assert out == "Paris." and tokens == ["0", "1"]


def test_text_holds_back_a_possible_stop_then_releases_it():
    text = Text(["\n\n"])
    text.add(b"one", None)
    assert text.release() == ("one", [])
    text.add(b"\n", {"token": "nl"})
    assert text.release() == ("", [])            # could begin "\n\n": held
    text.add(b"two", {"token": "two"})
    assert text.release() == ("\ntwo", [{"token": "nl"}, {"token": "two"}])


def test_text_joins_utf8_split_across_tokens():
    euro = "€".encode()
    out, tokens = feed(Text([]), [b"a", euro[:1], euro[1:], b"b"])
    assert out == "a€b" and tokens == ["0", "1", "2", "3"]


def test_json_mode_reads_response_format():
    assert json_mode(None) is None and json_mode({"type": "text"}) is None
    assert json_mode({"type": "json_object"}) == ("json_object", None)
    assert json_mode({"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}) == ("json_schema", SCHEMA)
    assert json_mode({"type": "json_schema", "json_schema": {"name": "x"}}) == ("json_object", None)
    with pytest.raises(InvalidRequest) as err:
        json_mode({"type": "yaml"})
    assert err.value.param == "response_format"


def test_tools_are_refused_unless_tool_choice_is_none():
    with pytest.raises(InvalidRequest) as err:
        refuse_tools(SMOL, GenParams(tools=TOOLS), "llama.cpp")
    assert err.value.param == "tools" and "'smollm2'" in err.value.message
    refuse_tools(SMOL, GenParams(tools=TOOLS, tool_choice="none"), "llama.cpp")


def test_logit_bias_keys_must_be_token_ids_of_the_model():
    assert token_bias(SMOL, {"17": -100, 3: 5}, 100) == {17: -100.0, 3: 5.0}
    for key in ("100", "-1", "hello"):
        with pytest.raises(InvalidRequest) as err:
            token_bias(SMOL, {key: 1}, 100)
        assert err.value.param == "logit_bias"


def test_vllm_sampling_fields_and_logprob_entries():
    params = GenParams(logprobs=True, top_logprobs=1, presence_penalty=0.5, logit_bias={"7": 2})
    assert sampling_fields(SMOL, params, 100) == {"presence_penalty": 0.5, "logprobs": 1, "logit_bias": {7: 2.0}}
    with pytest.raises(InvalidRequest):
        sampling_fields(SMOL, GenParams(tools=TOOLS), 100)
    lp = lambda token, logprob, rank: SimpleNamespace(decoded_token=token, logprob=logprob, rank=rank)  # noqa: E731
    positions = [{5: lp("Hi", -0.1, 1), 6: lp("Yo", -2.5, 2)}, {9: lp("!", -1.5, 2), 8: lp(".", -0.4, 1)}]
    entries = logprob_entries([5, 9], positions, top=1)
    assert entries[0] == {"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                          "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]}
    assert entries[1]["token"] == "!" and entries[1]["top_logprobs"][0]["token"] == "."
    assert logprob_entries([5], None, 0) is None


# --- real llama.cpp ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from service.workers.llamacpp_worker import LlamaCppWorker

    worker = LlamaCppWorker(tmp_path_factory.mktemp("fields-home"), threads=1)
    worker.load(SMOL)
    yield worker
    worker.close()


def generate(worker, params: GenParams, text="What is the largest city of France? Answer in JSON."):
    out = []
    worker.generate(SMOL, [Job(SMOL.name, [{"role": "user", "content": text}], params, out.append)])
    return out


@pytest.mark.real
def test_llamacpp_json_schema_answer_validates(smol):
    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    out = generate(smol, GenParams(max_tokens=40, temperature=0, response_format=fmt))
    assert out[-1].finish_reason == "stop"   # the grammar closed the object before max_tokens
    jsonschema.validate(json.loads("".join(d.text for d in out)), SCHEMA)
    out = generate(smol, GenParams(max_tokens=40, temperature=0.9, seed=3, response_format={"type": "json_object"}))
    assert isinstance(json.loads("".join(d.text for d in out)), dict)


@pytest.mark.real
def test_llamacpp_logprobs_one_entry_per_token(smol):
    out = generate(smol, GenParams(max_tokens=8, temperature=0, logprobs=True, top_logprobs=3), "Say hello.")
    entries = [e for d in out for e in (d.logprobs or ())]
    assert len(entries) == out[-1].usage["completion_tokens"]
    assert "".join(e["token"] for e in entries) == "".join(d.text for d in out)
    for e in entries:
        assert e["logprob"] <= 0 and bytes(e["bytes"]).decode() == e["token"] and len(e["top_logprobs"]) == 3
        assert e["top_logprobs"][0]["logprob"] == e["logprob"]   # greedy: the chosen token is the likeliest
        assert [a["logprob"] for a in e["top_logprobs"]] == sorted((a["logprob"] for a in e["top_logprobs"]), reverse=True)
    plain = generate(smol, GenParams(max_tokens=8, temperature=0), "Say hello.")
    assert all(d.logprobs is None for d in plain)


@pytest.mark.real
def test_llamacpp_logit_bias_and_penalties_change_the_answer(smol):
    first = generate(smol, GenParams(max_tokens=4, temperature=0, logprobs=True), "Say hello.")
    token = smol.models["smollm2"].llm.tokenize(first[0].logprobs[0]["token"].encode(), add_bos=False)[0]
    banned = generate(smol, GenParams(max_tokens=4, temperature=0, logit_bias={str(token): -100}), "Say hello.")
    assert "".join(d.text for d in banned) != "".join(d.text for d in first)
    penalised = generate(smol, GenParams(max_tokens=4, temperature=0, presence_penalty=2, frequency_penalty=2))
    assert penalised[-1].finish_reason in ("stop", "length")


@pytest.mark.real
def test_llamacpp_refuses_tools_and_a_foreign_token_id(smol):
    out = generate(smol, GenParams(max_tokens=4, tools=TOOLS))
    assert isinstance(out[0], InvalidRequest) and out[0].param == "tools"
    out = generate(smol, GenParams(max_tokens=4, logit_bias={"999999": 1}))
    assert isinstance(out[0], InvalidRequest) and out[0].param == "logit_bias"


@pytest.mark.real
def test_llamacpp_json_mode_on_a_completion_expert(tmp_path):
    import jsonschema

    from service.workers.llamacpp_worker import LlamaCppWorker

    gemma = BUNDLED["gemma-3-270m"]   # a base model with a Question/Answer template
    worker = LlamaCppWorker(tmp_path, threads=1)
    worker.load(gemma)
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "is_capital": {"type": "boolean"}},
              "required": ["city", "is_capital"]}
    out = []
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    worker.generate(gemma, [Job(gemma.name, [{"role": "user", "content": "Name a city in Japan."}],
                                GenParams(max_tokens=60, temperature=0, response_format=fmt), out.append)])
    worker.close()
    assert out[-1].finish_reason == "stop"
    jsonschema.validate(json.loads("".join(d.text for d in out)), schema)
