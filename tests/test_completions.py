"""POST /v1/completions on the scripted fake backend: request validation (400 naming the field), the
legacy response shape, echo / logprobs shaping, batches, routing, streaming; and the pure helpers."""

from __future__ import annotations

import json

import pytest

from service.core.backend import GenParams
from service.core.completions import entry, from_legacy, legacy_logprobs, raw_fields, raw_messages, raw_prompt

from .test_api import assert_openai_error
from .test_auth import keyed  # noqa: F401 - the fixture

PATH = "/v1/completions"


@pytest.fixture
def client(fake_gateway, client_for):
    return client_for(fake_gateway)


def test_plain_completion_has_the_legacy_shape(client):
    r = client.post(PATH, json={"model": "echo", "prompt": "hello there", "max_tokens": 50})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-") and data["model"] == "echo"
    assert data["choices"] == [{"text": "echo says: hello there", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert r.headers["x-conclave-expert"] == "echo"


def test_an_idempotency_key_is_refused_not_ignored(client):
    r = client.post(PATH, json={"model": "echo", "prompt": "hi"}, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "Idempotency-Key" and "without it" in err["message"]


def test_default_max_tokens_is_openais_16(client, fake_gateway):
    r = client.post(PATH, json={"model": "echo", "prompt": " ".join(["w"] * 40)})
    assert r.json()["usage"]["completion_tokens"] == 16 and r.json()["choices"][0]["finish_reason"] == "length"


def test_the_prompt_reaches_the_backend_verbatim_as_a_raw_job(client, fake_gateway):
    client.post(PATH, json={"model": "echo", "prompt": "Q: 2+2?\nA:", "max_tokens": 3})
    backend = fake_gateway.backends.get("llamacpp")
    assert backend.calls[-1] == ("echo", [{"role": "user", "content": "Q: 2+2?\nA:"}])


def test_echo_with_max_tokens_0_scores_the_prompt(client):
    r = client.post(PATH, json={"model": "echo", "prompt": "score me", "max_tokens": 0, "echo": True, "logprobs": 1})
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    assert c["text"] == "score me"
    lp = c["logprobs"]
    assert lp["tokens"] == ["score me"] and lp["token_logprobs"] == [None] and lp["top_logprobs"] == [None]
    assert lp["text_offset"] == [0]


def test_logprobs_with_echo_put_the_prompt_first(client):
    r = client.post(PATH, json={"model": "echo", "prompt": "hi", "max_tokens": 2, "echo": True, "logprobs": 2})
    c = r.json()["choices"][0]
    assert c["text"] == "hiecho says:"
    assert c["logprobs"]["tokens"] == ["hi", "echo", " says:"]
    assert c["logprobs"]["token_logprobs"] == [None, -1.0, -1.0]
    assert c["logprobs"]["top_logprobs"][1:] == [{"echo": -1.0}, {" says:": -1.0}]
    assert c["logprobs"]["text_offset"] == [0, 2, 6]


def test_logprobs_without_echo_offsets_start_after_the_prompt(client):
    r = client.post(PATH, json={"model": "echo", "prompt": "hi", "max_tokens": 1, "logprobs": 0})
    lp = r.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == ["echo"] and lp["text_offset"] == [2]


def test_a_batch_of_prompts_gets_one_choice_each_in_order(client):
    r = client.post(PATH, json={"model": "echo", "prompt": ["one", "two", "three"], "max_tokens": 5})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert [c["text"] for c in choices] == ["echo says: one", "echo says: two", "echo says: three"]
    assert r.json()["usage"]["completion_tokens"] == 9
    assert [c["expert"] for c in r.json()["conclave"]["choices"]] == ["echo"] * 3


def test_token_id_prompts_travel_as_ids(client, fake_gateway):
    r = client.post(PATH, json={"model": "echo", "prompt": [[1, 2, 3]], "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert fake_gateway.backends.get("llamacpp").calls[-1][1][0]["prompt_tokens"] == [1, 2, 3]


def test_routed_completion_routes_on_the_prompt(client):
    r = client.post(PATH, json={"model": "conclave-auto", "prompt": "solve this algebra problem", "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.headers["x-conclave-expert"] == "mathy" and r.json()["model"] == "mathy"
    assert r.json()["conclave"]["route"]["experts"] == ["mathy"]


def test_streaming_sends_text_completion_chunks_then_done(client):
    body = {"model": "echo", "prompt": "hello", "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": True}}
    with client.stream("POST", PATH, json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [l for l in r.iter_lines() if l]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(l[6:]) for l in lines[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "echo says: hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_failing_expert_mid_stream_ends_with_an_error_event(client):
    with client.stream("POST", PATH, json={"model": "midfail", "prompt": "x y z", "stream": True}) as r:
        lines = [l for l in r.iter_lines() if l]
    assert "[DONE]" not in lines[-1] and "error" in json.loads(lines[-1][6:])


@pytest.mark.parametrize("extra, param", [
    ({"max_tokens": "10"}, "max_tokens"),
    ({"stream": "yes"}, "stream"),
    ({"echo": 1}, "echo"),
    ({"logprobs": 6}, "logprobs"),
    ({"logprobs": True}, "logprobs"),
    ({"temperature": 3}, "temperature"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"n": 2}, "n"),
    ({"best_of": 3}, "best_of"),
    ({"suffix": "end"}, "suffix"),
    ({"presence_penalty": 1.0}, "presence_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"functions": []}, "functions"),
    ({"api_base": "http://evil"}, "api_base"),
    ({"max_tokens": 100000}, "max_tokens"),
    ({"conclave": {"k": 2}}, "conclave.k"),
    ({"conclave": {"aggregator": "vote"}}, "conclave.aggregator"),
])
def test_bad_fields_are_400_naming_the_field(client, extra, param):
    r = client.post(PATH, json={"model": "echo", "prompt": "hi", **extra})
    err = assert_openai_error(r, 400, param=param)
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize("prompt, param", [([], "prompt"), ([1, "a"], "prompt"), ([[1], []], "prompt"),
                                           ([-1], "prompt"), (["p"] * 33, "prompt"), (None, "prompt")])
def test_bad_prompts_are_400(client, prompt, param):
    assert_openai_error(client.post(PATH, json={"model": "echo", "prompt": prompt}), 400, param=param)


def test_streaming_a_batch_is_refused(client):
    r = client.post(PATH, json={"model": "echo", "prompt": ["a", "b"], "stream": True})
    assert_openai_error(r, 400, param="prompt")


def test_routed_token_ids_and_moe_are_refused(client):
    assert_openai_error(client.post(PATH, json={"model": "conclave-auto", "prompt": [5, 6]}), 400, param="prompt")
    assert_openai_error(client.post(PATH, json={"model": "conclave-moe", "prompt": "hi"}), 400, param="model")


def test_unknown_model_is_404_and_bad_json_400(client):
    assert_openai_error(client.post(PATH, json={"model": "nope", "prompt": "hi"}), 404, code="model_not_found")
    assert_openai_error(client.post(PATH, content=b"{not json"), 400, code="invalid_json")
    assert_openai_error(client.post(PATH, content=b"[1]"), 400, code="invalid_body")


def test_expert_failure_is_502_naming_it(client):
    err = assert_openai_error(client.post(PATH, json={"model": "fail", "prompt": "hi"}), 502)
    assert "fail" in err["message"]


def test_the_route_is_counted_in_metrics(client):
    client.post(PATH, json={"model": "echo", "prompt": "hi"})
    assert 'route="/v1/completions"' in client.get("/metrics").text


def test_openapi_describes_the_route(client):
    op = client.get("/openapi.json").json()["paths"][PATH]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert {"prompt", "echo", "logprobs"} <= set(schema["properties"])


# -- pure helpers ---------------------------------------------------------------------------------------

def test_legacy_logprobs_round_trip():
    legacy = {"tokens": ["The", " cat"], "token_logprobs": [None, -2.5], "top_logprobs": [None, {" cat": -2.5, " dog": -1.0}],
              "text_offset": [0, 3]}
    assert legacy_logprobs(from_legacy(legacy)) == legacy
    assert from_legacy(None) is None and legacy_logprobs(None) is None


def test_offsets_are_computed_when_an_upstream_sends_none():
    entries = [entry("ab", -1.0, None, 0), entry("c", -1.0, None, 0)]
    for e in entries:
        del e["text_offset"]
    assert legacy_logprobs(entries)["text_offset"] == [0, 2]


def test_raw_messages_carry_text_or_token_ids():
    assert raw_prompt(raw_messages("verbatim\n")) == "verbatim\n"
    assert raw_prompt(raw_messages([7, 8])) == [7, 8]


def test_upstream_fields_pass_echo_and_logprobs_through():
    p = GenParams(raw=True, echo=True, logprobs=True, top_logprobs=0)
    assert raw_fields(raw_messages("x"), p) == {"prompt": "x", "echo": True, "logprobs": 0}
    assert raw_fields(raw_messages("x"), GenParams(raw=True)) == {"prompt": "x"}
    assert raw_fields(raw_messages([3]), GenParams(raw=True, user="u-1")) == {"prompt": [3], "user": "u-1"}


def test_a_raw_prompt_gets_the_requests_stops_only():
    from experts_registry.model import Expert
    from service.core.backend import sampling

    e = Expert(name="e", backend="llamacpp", model="fake:echo", stop=("\nQ:",))
    assert sampling(e, GenParams(raw=True, stop=("END",)))["stop"] == ["END"]
    assert sampling(e, GenParams(stop=("END",)))["stop"] == ["\nQ:", "END"]


def test_backends_without_scoring_refuse_echo_and_logprobs_naming_the_field():
    from experts_registry.errors import InvalidRequest
    from service.core.completions import refuse_scoring

    for params, field in ((GenParams(raw=True, logprobs=True, echo=True), "logprobs"),
                          (GenParams(raw=True, echo=True), "echo")):
        with pytest.raises(InvalidRequest) as bad:
            refuse_scoring("x", params, "no logits here")
        assert bad.value.param == field and "'x'" in bad.value.message
    refuse_scoring("x", GenParams(raw=True), "no logits here")        # plain text: fine
    refuse_scoring("x", GenParams(logprobs=True), "no logits here")   # chat logprobs are not this check's


class Tok:
    """A tokenizer stand-in: one id per word (its length), BOS = 1, decode joins ids."""
    def encode(self, text, add_special_tokens):
        return ([1] if add_special_tokens else []) + [len(w) for w in text.split()]

    def decode(self, ids):
        return "|".join(map(str, ids))

    def __len__(self):
        return 100


def test_vllm_raw_prompts_put_a_bos_first_and_never_echo_it():
    from experts_registry.errors import InvalidRequest
    from service.workers.vllm_raw import raw_ids, scoring_fields

    assert raw_ids(Tok(), raw_messages("ab cde")) == ([1, 2, 3], 1)
    assert raw_ids(Tok(), raw_messages([1, 8])) == ([1, 8], 0)
    with pytest.raises(InvalidRequest) as bad:
        raw_ids(Tok(), raw_messages([5, 100]))
    assert bad.value.param == "prompt"
    scoring = GenParams(raw=True, echo=True, logprobs=True, top_logprobs=2, max_tokens=0)
    assert scoring_fields(scoring, 50) == {"max_tokens": 1, "logprobs": 2, "prompt_logprobs": 2}
    assert scoring_fields(GenParams(raw=True, max_tokens=9), 5) == {"max_tokens": 5}


def test_vllm_raw_answers_carry_prompt_and_answer_logprobs():
    from types import SimpleNamespace as NS

    from service.workers.base import Job
    from service.workers.vllm_raw import deliver_raw

    def lp(value, rank, text):
        return NS(logprob=value, rank=rank, decoded_token=text)

    prompt_lps = [None, {2: lp(-0.1, 1, "ab")}, {3: lp(-2.0, 2, " cde"), 7: lp(-0.5, 1, " x")}]
    out = NS(prompt_logprobs=prompt_lps, outputs=[NS(token_ids=[4], text=" wxyz", finish_reason="length",
                                                     logprobs=[{4: lp(-1.0, 3, " wxyz"), 9: lp(-0.2, 1, " y")}])])
    got = []
    deliver_raw(Tok(), Job("v", raw_messages("ab cde"), GenParams(raw=True, echo=True, logprobs=True,
                                                                 top_logprobs=1, max_tokens=0), got.append), out)
    assert got[0].text == "ab cde" and got[1].usage == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    assert [(e["token"], e["logprob"], e["text_offset"]) for e in got[0].logprobs] == [("ab", None, 0), (" cde", -2.0, 2)]
    assert {t["token"]: t["logprob"] for t in got[0].logprobs[1]["top_logprobs"]} == {" x": -0.5, " cde": -2.0}
    got = []
    deliver_raw(Tok(), Job("v", raw_messages("ab cde"), GenParams(raw=True, logprobs=True, max_tokens=3), got.append), out)
    assert got[0].text == " wxyz" and got[1].finish_reason == "length"
    assert [(e["token"], e["logprob"], e["text_offset"]) for e in got[0].logprobs] == [(" wxyz", -1.0, 6)]


def test_keys_model_limits_and_rate_limits_are_those_of_chat(keyed):
    from experts_registry.keys import new_key

    client, _, gw = keyed
    secret, key = new_key("narrow", "user", models=["echo", "conclave-auto"], rpm=3)
    gw.store.put_key(key)
    h = {"Authorization": f"Bearer {secret}"}
    assert_openai_error(client.post(PATH, headers=h, json={"model": "mathy", "prompt": "hi"}), 403, param="model")
    r = client.post(PATH, headers=h, json={"model": "conclave-auto", "prompt": "an algebra question"})
    assert r.status_code == 200 and r.headers["x-conclave-expert"] == "echo"   # routed within the key's experts
    chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", headers=h, json=chat).status_code == 200
    assert client.post(PATH, headers=h, json={"model": "echo", "prompt": "hi"}).status_code == 200   # 3 of 3
    r = client.post(PATH, headers=h, json={"model": "echo", "prompt": "hi"})   # (the 403 was not counted)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"


def test_a_routed_batch_routes_each_prompt(client):
    r = client.post(PATH, json={"model": "conclave-auto", "prompt": ["solve this algebra problem", "tell me a story"],
                                "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "conclave-auto"   # the choices came from different experts
    assert [c["expert"] for c in r.json()["conclave"]["choices"]] == ["mathy", "echo"]
    assert [c["text"].split()[0] for c in r.json()["choices"]] == ["mathy", "echo"]
