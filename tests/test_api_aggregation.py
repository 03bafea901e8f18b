"""k > 1 through the HTTP API on the scripted fake backend: fan-out, vote, synthesis, failures."""

from __future__ import annotations

import json

import pytest

from .conftest import fake_expert

CHAT = "/v1/chat/completions"
QUIZ = "quiz: which option is right? (A) one (B) two (C) three"


@pytest.fixture
def make_client(fake_gateway, client_for):
    """A client over a gateway whose registry holds exactly the given quiz experts."""
    def make(*experts, **settings):
        for e in fake_gateway.store.list():
            fake_gateway.store.remove(e.name)
        for name, behaviour in experts:
            fake_gateway.store.add(fake_expert(name, behaviour, skills=("quiz",)))
        return client_for(fake_gateway, **settings)
    return make


def ask(client, k=3, aggregator="vote", model="conclave-auto", **opts):
    body = {"model": model, "messages": [{"role": "user", "content": QUIZ}], "max_tokens": 50}
    if k is not None:
        body["conclave"] = {"k": k, "aggregator": aggregator, **opts}
    return client.post(CHAT, json=body)


def test_vote_returns_the_majority_answer_and_reports_candidates(make_client):
    client = make_client(("a-c", "answer=C"), ("b-b", "answer=B"), ("c-b", "answer=B"))
    r = ask(client)
    assert r.status_code == 200, r.text
    data = r.json()
    assert "The answer is (B)" in data["choices"][0]["message"]["content"]
    assert data["conclave"]["expert"] in ("b-b", "c-b")
    assert r.headers["x-conclave-expert"] == data["conclave"]["expert"]
    agg = data["conclave"]["aggregation"]
    assert agg["aggregator"] == "vote" and agg["failed"] == {}
    assert sorted(r.headers["x-conclave-candidates"].split(",")) == ["a-c", "b-b", "c-b"]
    assert data["usage"]["completion_tokens"] == 3 * 10  # 10 words each: every candidate's tokens are counted
    assert "candidates" not in agg


def test_return_candidates_includes_their_texts(make_client):
    client = make_client(("a-c", "answer=C"), ("b-b", "answer=B"))
    agg = ask(client, k=2, return_candidates=True).json()["conclave"]["aggregation"]
    texts = {c["expert"]: c["text"] for c in agg["candidates"]}
    assert texts == {"a-c": "Let me think step by step. The answer is (C).",
                     "b-b": "Let me think step by step. The answer is (B)."}


def test_survivors_answer_when_some_experts_fail_or_hang(make_client):
    client = make_client(("a-b", "answer=B"), ("fail", "fail"), ("hang", "hang"))
    r = ask(client)
    assert r.status_code == 200, r.text
    agg = r.json()["conclave"]["aggregation"]
    assert set(agg["failed"]) == {"fail", "hang"}
    assert "did not answer within" in agg["failed"]["hang"]
    assert r.json()["conclave"]["expert"] == "a-b"


def test_all_experts_failing_is_502_naming_them(make_client):
    client = make_client(("fail", "fail"), ("hang", "hang"))
    r = ask(client, k=2)
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert "fail" in message and "hang" in message


def test_synthesis_streams_the_aggregator_answer(make_client):
    client = make_client(("a-c", "answer=C"), ("b-b", "answer=B"), ("z-echo", "echo"), aggregator_expert="z-echo")
    body = {"model": "conclave-auto", "stream": True, "messages": [{"role": "user", "content": QUIZ}],
            "max_tokens": 400, "conclave": {"k": 2, "aggregator": "synthesis"}}
    with client.stream("POST", CHAT, json=body) as r:
        assert r.status_code == 200
        assert r.headers["x-conclave-aggregator"] == "synthesis"
        lines = [l for l in r.iter_lines() if l]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(l[6:]) for l in lines[:-1]]
    first = chunks[0]["conclave"]
    assert first["aggregation"]["aggregated_by"] == first["expert"] == "z-echo"
    assert first["aggregation"]["experts"] == ["a-c", "b-b"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.startswith("z-echo says:")  # the fake judge echoes the synthesis prompt it was given
    assert "The answer is (C)" in text and "The answer is (B)" in text


def test_moe_virtual_model_uses_configured_defaults(make_client):
    client = make_client(("a-c", "answer=C"), ("b-b", "answer=B"), ("c-b", "answer=B"))
    r = ask(client, k=None, model="conclave-moe")
    assert r.status_code == 200
    assert r.json()["conclave"]["aggregation"]["aggregator"] == "vote"
    assert len(r.headers["x-conclave-candidates"].split(",")) == 3


def test_unknown_aggregator_is_400(make_client):
    client = make_client(("a-c", "answer=C"), ("b-b", "answer=B"))
    r = ask(client, k=2, aggregator="magic")
    assert r.status_code == 400 and r.json()["error"]["param"] == "aggregator"


def test_synthesis_judge_defaults_to_the_best_ranked_survivor(make_client):
    client = make_client(("a-c", "answer=C"), ("b-b", "answer=B"))
    r = ask(client, k=2, aggregator="synthesis")
    agg = r.json()["conclave"]["aggregation"]
    assert agg["aggregated_by"] == "a-c" == r.headers["x-conclave-expert"]


def test_synthesis_judge_comes_from_the_aggregation_profile(make_client, fake_gateway):
    from aggregators.profile import build_profile, save_profile
    from service.pipeline.aggregator_profile import profile_path

    doc = build_profile({"b-b": {"accuracy": 0.9, "n": 10}, "a-c": {"accuracy": 0.2, "n": 10}}, built_from="test")
    save_profile(doc, profile_path(fake_gateway.settings.home))
    client = make_client(("a-c", "answer=C"), ("b-b", "answer=B"))
    agg = ask(client, k=2, aggregator="synthesis").json()["conclave"]["aggregation"]
    assert agg["aggregated_by"] == "b-b"
