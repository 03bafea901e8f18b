"""The correctness router, weighted votes and adaptive k, the static encoder, cross-validated replay."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.cli import bench
from benchmarks.replay_cv import bootstrap_diff, cross_validate
from experts_registry.errors import ConfigError, InvalidRequest
from router import ROUTERS
from router.adaptive import Stopping, cascade, fit_stopping, should_stop, vote_weights, weighted_vote
from router.base import Decision, RouteRequest
from router.correct import AUTO, parse_k
from router.correct_fit import calibration, fit_correct
from router.encoder import HashingEncoder, get_encoder
from router.evaluation import decision_answers
from router.replay_data import load_models, load_replay
from tests.router_fakes import candidates, two_topic_outcomes, write_replay_files


@pytest.fixture(scope="module")
def fitted():
    enc = HashingEncoder(64)
    return enc, fit_correct(two_topic_outcomes(40, encoder=enc), encoder=enc.name)


def route(router, enc, text, k=1, names=("mathy", "lawyer", "middling")):
    return router.route(RouteRequest(text, enc.encode([text])[0]), candidates(names), k)


def test_weighted_vote_weights_and_ties():
    w = vote_weights([0.9, 0.3, 0.3])
    assert w[0] > w[1] == w[2] > 0
    # one confident expert outvotes two weak ones that agree; a tie goes to the first voter
    assert weighted_vote(np.array([[0, 1, 1]]), np.array([[5.0, 1.0, 1.0]]))[0].tolist() == [0]
    assert weighted_vote(np.array([[2, 3]]), np.array([[1.0, 1.0]]))[0].tolist() == [2]
    assert weighted_vote(np.array([[-1, -1]]), np.array([[1.0, 1.0]]))[0].tolist() == [-1]


def test_cascade_stops_when_the_vote_is_clear():
    answers = np.array([[0, 0, 1, 1], [0, 1, 2, 2], [0, 1, 1, 1]])
    weights = np.ones((3, 4))
    final, calls = cascade(answers, weights, Stopping(min_calls=2, threshold=1.5, max_calls=4))
    assert calls.tolist() == [2, 4, 4] and final.tolist() == [0, 2, 1]
    assert should_stop([0, 0], [1.0, 1.0], Stopping(2, 1.5, 4))
    assert not should_stop([0], [1.0], Stopping(2, 0.0, 4))
    assert should_stop([0, 1, 2, 3], [1.0] * 4, Stopping(2, 99.0, 4))


def test_fit_stopping_keeps_to_the_budget():
    rng = np.random.default_rng(0)
    gold = np.zeros(300, dtype=np.int64)
    answers = np.where(rng.random((300, 6)) < 0.55, 0, rng.integers(1, 10, (300, 6)))
    fitted = fit_stopping(answers, np.ones((300, 6)), gold, budget=2.5)
    assert fitted["calls"] <= 2.5 and fitted["accuracy"] >= (answers[:, 0] == 0).mean()


def test_parse_k():
    assert parse_k("auto") == AUTO and parse_k(" Auto ") == AUTO and parse_k(3) == 3 and parse_k("2") == 2
    for bad in (0, -1, "x", True, None):
        with pytest.raises(InvalidRequest):
            parse_k(bad)


def test_correct_router_picks_the_specialist_and_explains(fitted):
    enc, router = fitted
    d = route(router, enc, "integral derivative algebra equation please")
    assert d.experts == ["mathy"] and d.router == "correct"
    assert d.choices[0].why["p_correct"] > 0.7 > d.choices[1].why["p_correct"]
    assert "predicted correctness: mathy (p=" in d.reason and "likely category math" in d.reason
    assert route(router, enc, "tort plaintiff court statute").experts == ["lawyer"]


def test_correct_router_k3_weights_and_auto(fitted):
    enc, router = fitted
    d = route(router, enc, "contract tort jury appeal", k=3)
    assert d.k == 3 and d.weights is not None and d.weights[0] >= d.weights[1] >= d.weights[2]
    auto = route(router, enc, "contract tort jury appeal", k=AUTO)
    assert auto.stopping == router.stopping.to_dict() and auto.k == min(router.stopping.max_calls, 3)
    assert "until the weighted vote is clear" in auto.reason
    assert auto.to_dict()["stopping"]["max_calls"] == router.stopping.max_calls


def test_fit_on_outcomes_of_one_kind_gives_the_smoothed_rate():
    """A tiny live slice where every answer was wrong: nothing to separate, no crash."""
    from dataclasses import replace

    enc = HashingEncoder(64)
    wrong = two_topic_outcomes(3, encoder=enc)
    wrong = replace(wrong, correct=np.zeros_like(wrong.correct), gold=np.full(len(wrong), 9, dtype=np.int16))
    router = fit_correct(wrong, encoder=enc.name)
    p, _ = router.probabilities(enc.encode(["solve x + 1 = 2"])[0])
    assert np.allclose(p, 1 / (wrong.correct.size + 2))     # (0 + 1) / (n + 2) for every expert
    assert route(router, enc, "solve x + 1 = 2").choices[0].expert in ("mathy", "lawyer", "middling")


def test_correct_router_state_round_trip_and_encoder_mismatch(fitted, tmp_path):
    enc, router = fitted
    router.save(tmp_path / "correct", {"n_questions": 80})
    loaded = ROUTERS["correct"](state=str(tmp_path / "correct"))
    text = "matrix eigenvalue polynomial root"
    assert route(loaded, enc, text).to_dict() == route(router, enc, text).to_dict()
    assert loaded.encoder == "hashing-64"
    with pytest.raises(ConfigError, match="trained on 64-d embeddings"):
        loaded.route(RouteRequest(text, HashingEncoder(32).encode([text])[0]), candidates(), 1)
    with pytest.raises(ConfigError, match="conclave router train correct"):
        ROUTERS["correct"](state=str(tmp_path / "nothing"))


def test_cost_weight_prefers_the_smaller_expert(fitted):
    enc, router = fitted
    cheap = type(router)(router.a, router.encoder, router.stopping, cost_weight=5.0)
    text = "probability variance integral limit"
    assert route(router, enc, text).experts == ["mathy"]
    assert route(cheap, enc, text).experts == ["middling"]       # 3.8B against mathy's 7B


def test_calibration_report():
    p = np.array([0.1, 0.2, 0.8, 0.9])
    report = calibration(p, np.array([0.0, 0.0, 1.0, 1.0]), bins=2)
    assert report["log_loss"] < 0.3 and [b["observed"] for b in report["reliability"]] == [0.0, 1.0]


def test_decision_answers_use_weights_and_stopping():
    experts = ("a", "b", "c")
    from router.base import Choice
    choices = tuple(Choice(e, s) for e, s in zip(experts, (0.9, 0.4, 0.4)))
    answers = np.array([0, 1, 1])
    assert decision_answers(Decision(choices, 3, "x", ""), experts, answers) == (1, [0, 1, 2])
    weighted = Decision(choices, 3, "x", "", weights=(5.0, 1.0, 1.0))
    assert decision_answers(weighted, experts, answers) == (0, [0, 1, 2])
    auto = Decision(choices, 3, "x", "", stopping={"min_calls": 1, "threshold": 2.0, "max_calls": 3},
                    weights=(5.0, 1.0, 1.0))
    assert decision_answers(auto, experts, answers) == (0, [0])


def test_bootstrap_diff_sees_a_real_gain_and_no_gain():
    gain = bootstrap_diff(np.r_[np.ones(60), np.zeros(940)])
    assert gain["diff"] == 0.06 and gain["p_no_better"] < 0.01 and gain["ci95"][0] > 0
    none = bootstrap_diff(np.r_[np.ones(30), -np.ones(30), np.zeros(940)])
    assert none["p_no_better"] > 0.2


def test_cross_validation_on_tiny_files(tmp_path):
    q, p, m = write_replay_files(tmp_path)
    data = load_replay(q, p, load_models(m), "three")
    result = cross_validate(data, ["knn"], [1], HashingEncoder(32), None, folds=2, seeds=2)
    assert result["folds"] == 2 and len(result["splits"]) == 4
    knn = result["systems"]["knn@k1"]
    assert knn["n_splits"] == 4 and len(knn["accuracy_per_split"]) == 4
    assert set(result["paired"]["knn@k1"]) >= {"baseline:best_single", "baseline:category_best"}


def test_cli_replay_folds_with_auto_k(tmp_path):
    q, p, m = write_replay_files(tmp_path)
    out = tmp_path / "cv.json"
    args = ["replay", "--train-questions", str(q), "--train-predictions", str(p), "--models", str(m),
            "--pool", "three", "--router", "correct", "--k", "1", "--k", "auto", "--folds", "2",
            "--encoder", "hashing-32", "--no-cache", "--json", str(out)]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"correct@k1", "correct@kauto", "baseline:vote_top3"} <= set(data["systems"])
    for key in ("accuracy", "accuracy_std", "calls_per_question", "active_params_per_question"):
        assert key in data["systems"]["correct@kauto"]
    assert "paired differences" in result.output
    bad = CliRunner().invoke(bench, args[:-2] + ["--k", "zero"])
    assert bad.exit_code == 2 and "positive integer" in bad.output


@pytest.mark.real
def test_static_encoder_is_deterministic_and_semantic():
    enc = get_encoder("static")
    texts = ["What is the derivative of x squared?", "Differentiate x^2 with respect to x.",
             "Who wrote the Declaration of Independence?"]
    a, b = enc.encode(texts), get_encoder("static-minilm-256").encode(texts)
    assert a.shape == (3, 256) and np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert a[0] @ a[1] > a[0] @ a[2]
    with pytest.raises(InvalidRequest):
        enc.encode([" "])


@pytest.mark.real
def test_declared_router_is_the_untrained_default_and_reads_skills_by_meaning(tmp_path):
    """The newcomer's case: an expert declared with skill 'math' gets a proof, with no word in common."""
    import asyncio

    from experts_registry.bundled import bundled_experts
    from experts_registry.model import Expert
    from service.core.config import load_settings
    from service.pipeline.routing import RouterHost

    host = RouterHost(load_settings({"CONCLAVE_HOME": str(tmp_path)}))
    experts = bundled_experts() + [Expert(name="remote1", backend="litellm", model="openai/x", skills=("math", "code"))]
    d = asyncio.run(host.route(None, "Prove that the square root of 2 is irrational", experts, 1))
    assert d.router == "declared" and d.experts == ["remote1"]
    assert "declared 'math'" in d.reason and d.choices[0].why["cosine"] >= 0.3
    d = asyncio.run(host.route(None, "What is the capital of France?", experts, 1))
    assert d.experts == ["smollm2"] and "sent to smollm2" in d.reason      # the generalist
    assert asyncio.run(host.route("tags", "Prove it", experts, 1)).router == "tags"   # still selectable


def test_declared_router_without_vectors_falls_back_to_the_generalist():
    from experts_registry.model import Expert
    from router.declared import DeclaredRouter, expert_texts

    a = Expert(name="a", backend="litellm", model="x/a", skills=("general", "law"), description="Lawyer.")
    assert expert_texts(a) == ["law", "Lawyer."]
    b = Expert(name="b", backend="litellm", model="x/b")
    d = DeclaredRouter(generalist="b").route(RouteRequest("q", np.ones(4) / 2), [a, b], 1)
    assert d.experts == ["b"] and "sent to b" in d.reason
    vectors = {"a": np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])}
    d = DeclaredRouter(generalist="b").route(RouteRequest("q", np.array([0.9, 0.1, 0, 0]),
                                                          {"expert_vectors": vectors}), [a, b], 1)
    assert d.experts == ["a"] and d.choices[0].why == {"closest": "law", "cosine": 0.9}


def test_cost_curve_and_tradeoff_plots(tmp_path):
    from benchmarks.replay_plots import main as plots_main

    q, p, m = write_replay_files(tmp_path)
    out = tmp_path / "one.json"
    base = ["replay", "--train-questions", str(q), "--train-predictions", str(p), "--models", str(m),
            "--pool", "three", "--router", "correct", "--k", "1", "--encoder", "hashing-32", "--no-cache",
            "--cost-weight", "0", "--cost-weight", "10"]
    result = CliRunner().invoke(bench, [*base, "--test-fraction", "0.5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    curve = json.loads(out.read_text())["routers"]["correct"]["cost_curve"]
    assert [c["cost_weight"] for c in curve] == [0.0, 10.0]
    assert curve[1]["active_params_per_question"] == 3.8        # priced hard: always the 3.8B expert
    assert "correct cost=10" in result.output
    cv = tmp_path / "cv.json"
    result = CliRunner().invoke(bench, [*base, "--folds", "2", "--json", str(cv)])
    assert result.exit_code == 0, result.output
    assert "correct-cost10@k1" in json.loads(cv.read_text())["systems"]
    plots_main([str(cv), "--out", str(tmp_path / "plots")])
    for name in ("accuracy_vs_calls.png", "accuracy_vs_params.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_training_reports_adaptive_k_and_calibration(tmp_path):
    from router.training import train_router

    enc = HashingEncoder(64)
    meta = train_router("correct", two_topic_outcomes(40, encoder=enc), tmp_path / "correct", encoder=enc)
    v = meta["validation"]
    assert {"k1", "k3", "kauto", "calibration"} <= set(v)
    assert 1 <= v["kauto"]["calls_per_question"] <= 3
    cal = v["calibration"]
    assert 0 < cal["log_loss"] < 0.69 and cal["reliability"] and sum(b["n"] for b in cal["reliability"]) == 3 * v["n"]


def test_route_many_gives_the_decisions_route_gives_one_at_a_time(fitted):
    """Batches (bench, replay) go through route_many; each decision is the single-request one."""
    from router.base import route_many
    from router.fit import fit_knn
    from router.tags import TagsRouter

    enc, router = fitted
    texts = ["solve the integral of x", "the court ruled on the contract", "hello there", "factor the polynomial"]
    requests = [RouteRequest(t, e) for t, e in zip(texts, enc.encode(texts))]
    knn = fit_knn(two_topic_outcomes(40, encoder=enc), tune=False, n_neighbors=10)
    for r, k in ((router, 1), (router, 3), (router, AUTO), (knn, 1), (knn, 3)):
        many = route_many(r, requests, candidates(), k)
        one = [r.route(q, candidates(), k) for q in requests]
        assert [d.to_dict() for d in many] == [d.to_dict() for d in one]
        assert route_many(r, [], candidates(), k) == []
    p_many, _ = router.probabilities_many(enc.encode(texts))
    assert np.allclose(p_many, np.stack([router.probabilities(e)[0] for e in enc.encode(texts)]), atol=1e-6)
    tags = TagsRouter()                       # no route_many: routed one at a time
    assert [d.experts for d in route_many(tags, requests, candidates(), 1)] == \
        [tags.route(q, candidates(), 1).experts for q in requests]
    with pytest.raises(InvalidRequest, match="empty prompt"):
        route_many(router, [requests[0], RouteRequest(" ", requests[0].embedding)], candidates(), 1)


def test_static_encoder_neighbours_are_found_on_its_first_64_dimensions(tmp_path):
    """The search table keeps 64 of the static encoder's 256 PCA dimensions (a quarter of the
    memory); requests still come as 256-d embeddings; other encoders keep every dimension."""
    enc = get_encoder("static")
    router = fit_correct(two_topic_outcomes(30, encoder=enc), encoder=enc.name)
    assert router.a["embeddings"].shape[1] == 64 and router.dim == 256 and router.search_dims == 64
    assert np.allclose(np.linalg.norm(router.a["embeddings"], axis=1), 1.0, atol=1e-5)
    assert route(router, enc, "solve the equation for x").experts[0] == "mathy"
    router.save(tmp_path / "c")
    again = ROUTERS["correct"](state=str(tmp_path / "c"))
    assert again.search_dims == 64 and route(again, enc, "the court and the contract").experts[0] == "lawyer"
    with pytest.raises(ConfigError, match="256-d"):
        again.probabilities(np.ones(64, dtype=np.float32))
    hashed = fit_correct(two_topic_outcomes(30, encoder=HashingEncoder(64)), encoder="hashing-64", search_dims=None)
    assert hashed.search_dims == hashed.dim == 64
