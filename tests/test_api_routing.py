"""Fitted routers behind the gateway: conclave-auto, per-request router choice, explanations, bad config."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from router.encoder import HashingEncoder
from router.outcomes import Outcomes
from router.training import train_router
from service.cli import main
from service.pipeline.routing import router_dir

CHAT = "/v1/chat/completions"
MATH = ["solve the equation x + 2 = 5", "integrate x squared", "what is 7 times 8", "factor x^2 - 1"]
TALK = ["tell me a story about a cat", "write a poem about rain", "describe a sunny day", "greet my friend"]


def train_knn(home):
    """knn fitted on outcomes where 'mathy' is right on maths and 'echo' on the rest."""
    texts = MATH * 3 + TALK * 3
    is_math = np.array([t in MATH for t in texts])
    correct = np.stack([~is_math, is_math], axis=1).astype(np.float32)   # columns: echo, mathy
    enc = HashingEncoder(64)
    outcomes = Outcomes(experts=("echo", "mathy"), correct=correct, texts=tuple(texts),
                        embeddings=enc.encode(texts), active_params={"echo": 1.0, "mathy": 1.0},
                        question_ids=tuple(range(len(texts))))
    train_router("knn", outcomes, router_dir_of(home) / "knn", encoder=enc)


def router_dir_of(home):
    from service.core.config import load_settings

    return router_dir(load_settings().with_(home=home))


@pytest.fixture
def knn_client(fake_gateway, client_for):
    train_knn(fake_gateway.settings.home)
    return client_for(fake_gateway, router="knn")


def ask(client, text, **conclave):
    body = {"model": "conclave-auto", "messages": [{"role": "user", "content": text}]}
    if conclave:
        body["conclave"] = conclave
    return client.post(CHAT, json=body)


def test_configured_knn_router_routes_and_explains(knn_client):
    r = ask(knn_client, "integrate x squared")
    assert r.status_code == 200, r.text
    assert r.headers["x-conclave-router"] == "knn" and r.headers["x-conclave-expert"] == "mathy"
    route = r.json()["conclave"]["route"]
    assert route["router"] == "knn" and route["experts"] == ["mathy"]
    assert "nearest recorded questions" in route["reason"]
    assert route["scores"][0]["neighbour_accuracy"] > route["scores"][1]["neighbour_accuracy"]
    assert ask(knn_client, "write a poem about rain").headers["x-conclave-expert"] == "echo"


def test_router_chosen_per_request(knn_client):
    r = ask(knn_client, "integrate x squared", router="tags")
    assert r.headers["x-conclave-router"] == "tags"


def test_untrained_router_is_a_clear_error(knn_client):
    for name, how in [("coe", "conclave router train coe"), ("skills", "conclave profile build")]:
        r = ask(knn_client, "integrate x squared", router=name)
        assert r.status_code == 400, r.text   # the caller named it: a client error, never a 500
        err = r.json()["error"]
        assert err["code"] == "router_unavailable" and how in err["message"] and repr(name) in err["message"]
        assert "/" not in err["message"].replace("router_unavailable", "") and "home" not in err["message"]


def test_router_trained_for_other_experts_is_a_clear_error(knn_client, fake_gateway):
    for name in ("echo", "mathy"):
        fake_gateway.store.remove(name)
    r = ask(knn_client, "integrate x squared")
    assert r.status_code == 500 and "retrain it" in r.json()["error"]["message"]


def test_conclave_route_prints_the_decision(fake_gateway, isolated_env):
    train_knn(isolated_env)
    runner = CliRunner()
    for name in ("echo", "mathy"):
        assert runner.invoke(main, ["experts", "add", name, "--backend", "litellm", "--model", "openai/x"]).exit_code == 0
    out = runner.invoke(main, ["route", "factor x^2 - 1", "--router", "knn"])
    assert out.exit_code == 0 and out.output.startswith("knn: mathy")
    bad = runner.invoke(main, ["route", "hi", "--router", "skills"])
    assert bad.exit_code == 1 and "conclave profile build" in bad.output
    empty = runner.invoke(main, ["route", "  ", "--router", "knn"])
    assert empty.exit_code == 1 and "empty" in empty.output


def test_skills_router_with_the_llm_keyword_extractor(fake_gateway, client_for):
    """CONCLAVE_KEYWORD_EXPERT: the question's skills come from n sampled keyword lists (>= 2 agree)."""
    from .conftest import fake_expert

    texts = MATH * 2 + TALK * 2
    is_math = np.array([t in MATH for t in texts])
    outcomes = Outcomes(experts=("echo", "mathy"), correct=np.stack([~is_math, is_math], axis=1),
                        texts=tuple(texts), labels={"category": ["algebra" if m else "poetry" for m in is_math]},
                        question_ids=tuple(range(len(texts))))
    train_router("skills", outcomes, router_dir_of(fake_gateway.settings.home) / "skills",
                 encoder=HashingEncoder(64), sample=False)
    fake_gateway.store.add(fake_expert("kw", "say=Algebra, equations"))
    client = client_for(fake_gateway, router="skills", keyword_expert="kw", keyword_samples=3)
    r = ask(client, "solve x + 2 = 5")
    assert r.status_code == 200, r.text
    route = r.json()["conclave"]["route"]
    assert route["reason"].startswith("skills from keywords: algebra") and route["experts"] == ["mathy"]
    calls = [name for name, _ in fake_gateway.backends.get("llamacpp").calls]
    assert calls.count("kw") == 3


def test_profile_build_replay_and_router_train_from_the_cli(isolated_env):
    """`conclave profile build --replay` and `conclave router train` on the shipped MMLU-Pro records
    (the hashing encoder keeps it fast; the real MiniLM path is covered by test_replay_real)."""
    runner = CliRunner()
    out = runner.invoke(main, ["profile", "build", "--replay", "--pool", "small-17", "--encoder", "hashing-64"])
    assert out.exit_code == 0, out.output
    assert "skills profile: 17 experts" in out.output and (isolated_env / "routers" / "skills").is_dir()
    out = runner.invoke(main, ["router", "train", "coe", "--encoder", "hashing-64"])
    assert out.exit_code == 0, out.output
    assert "trained coe on 8400 questions x 17 experts" in out.output
    assert (isolated_env / "routers" / "coe" / "meta.json").is_file()


def train_correct(home):
    """The correctness router on outcomes where 'mathy' is right on maths and 'echo' on the rest."""
    texts = MATH * 5 + TALK * 5
    is_math = np.array([t in MATH for t in texts])
    correct = np.stack([~is_math, is_math], axis=1).astype(np.float32)   # columns: echo, mathy
    answers = np.where(correct == 1, 0, np.array([[1, 2]])).astype(np.int16)
    enc = HashingEncoder(64)
    outcomes = Outcomes(experts=("echo", "mathy"), correct=correct, texts=tuple(texts),
                        labels={"category": ["math" if m else "talk" for m in is_math]},
                        embeddings=enc.encode(texts), active_params={"echo": 1.0, "mathy": 2.0},
                        question_ids=tuple(range(len(texts))), answers=answers,
                        gold=np.zeros(len(texts), dtype=np.int16))
    train_router("correct", outcomes, router_dir_of(home) / "correct", encoder=enc)


def test_trained_correct_router_is_the_default_and_k_auto_reports_its_calls(fake_gateway, client_for):
    client = client_for(fake_gateway)
    assert ask(client, "integrate x squared").headers["x-conclave-router"] == "declared"   # nothing trained yet
    train_correct(fake_gateway.settings.home)
    client = client_for(fake_gateway)
    r = ask(client, "integrate x squared")
    assert r.status_code == 200, r.text
    assert r.headers["x-conclave-router"] == "correct" and r.headers["x-conclave-expert"] == "mathy"
    assert r.json()["conclave"]["route"]["scores"][0]["p_correct"] > 0.5
    r = ask(client, "integrate x squared", k="auto")
    assert r.status_code == 200, r.text
    agg = r.json()["conclave"]["aggregation"]
    assert r.headers["x-conclave-aggregator"] == "weighted-vote"
    assert agg["calls"] == int(r.headers["x-conclave-calls"]) and 1 <= agg["calls"] <= 2
    assert r.json()["conclave"]["route"]["stopping"]["max_calls"] >= agg["calls"]


def test_k_auto_needs_a_router_that_predicts_correctness(knn_client):
    r = ask(knn_client, "integrate x squared", k="auto")
    assert r.status_code == 400 and "needs a router that predicts correctness" in r.json()["error"]["message"]
    assert ask(knn_client, "integrate x squared", k="many").status_code == 400
