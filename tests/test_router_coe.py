"""Category router (Composition of Experts): map under a budget, classifier, generalist."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from experts_registry.errors import ConfigError, InvalidRequest
from router import ROUTERS, RouteRequest
from router.coe import category_map, normalised_entropy
from router.encoder import HashingEncoder
from router.fit import fit_coe
from tests.router_fakes import candidates, two_topic_outcomes


def test_map_without_budget_is_per_category_best():
    acc = np.array([[0.9, 0.5], [0.8, 0.85]])
    assert category_map(acc, np.array([1.0, 1.0]), np.array([10.0, 1.0])).tolist() == [0, 1]


def test_map_under_budget_by_hand():
    acc = np.array([[0.9, 0.5], [0.8, 0.7]])            # the big expert (10B) is best everywhere
    freq, params = np.array([1.0, 1.0]), np.array([10.0, 1.0])
    assert category_map(acc, freq, params, budget=20).tolist() == [0, 0]
    # average 6B: only one category can have the big expert; it pays more on category 0
    assert category_map(acc, freq, params, budget=6).tolist() == [0, 1]
    assert category_map(acc, freq, params, budget=1.2).tolist() == [1, 1]
    with pytest.raises(ConfigError, match="no category -> expert map fits"):
        category_map(acc, freq, params, budget=0.5)


def test_map_under_budget_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(40):
        acc, freq, params = rng.random((4, 3)), rng.integers(1, 9, 4).astype(float), rng.choice([1, 7, 70], 3)
        budget = float(rng.uniform(params.min(), params.max()))
        feasible = [(sum(freq[c] * acc[c, e] for c, e in enumerate(m)), m) for m in product(range(3), repeat=4)
                    if sum(freq[c] * params[e] for c, e in enumerate(m)) / freq.sum() <= budget * 0.995]
        got = category_map(acc, freq, params, budget, steps=4000)
        value = sum(freq[c] * acc[c, e] for c, e in enumerate(got))
        assert (freq @ params[got]) / freq.sum() <= budget + 1e-9
        assert not feasible or value >= max(feasible)[0] - 1e-9


def test_entropy_is_normalised():
    assert normalised_entropy(np.array([0.25] * 4)) == pytest.approx(1.0)
    assert normalised_entropy(np.array([1.0, 0.0, 0.0])) == 0.0


def test_fitted_router_maps_category_to_specialist():
    router = fit_coe(two_topic_outcomes(), entropy_threshold=1.0, encoder="hashing-64")
    enc = HashingEncoder(64)
    text = "tort plaintiff court"
    d = router.route(RouteRequest(text, enc.encode([text])[0]), candidates(), k=2)
    assert d.experts[0] == "lawyer"
    assert d.choices[0].why["category"] == "law" and d.choices[0].why["confidence"] > 0.5
    assert d.reason.startswith("category law (confidence")


def test_uncertain_requests_go_to_the_generalist():
    router = fit_coe(two_topic_outcomes(), generalist="middling", entropy_threshold=0.0)
    text = "tort plaintiff court"
    d = router.route(RouteRequest(text, HashingEncoder(64).encode([text])[0]), candidates(), k=1)
    assert d.experts == ["middling"] and "generalist middling" in d.reason


def test_tuned_threshold_and_budget(tmp_path):
    outcomes = two_topic_outcomes(n_per_topic=40)
    router = fit_coe(outcomes, budget=8.0)                  # lawyer (13B) cannot take law at 50%
    assert 0.0 < router.entropy_threshold <= 1.0
    mapped = {c: router.experts[m] for c, m in zip(router.categories, router.mapping)}
    assert mapped == {"math": "mathy", "law": "middling"}


def test_errors_and_state_round_trip(tmp_path):
    router = fit_coe(two_topic_outcomes(), encoder="hashing-64")
    emb = HashingEncoder(64).encode(["court"])[0]
    with pytest.raises(InvalidRequest, match="embedding"):
        router.route(RouteRequest("court"), candidates(), 1)
    with pytest.raises(InvalidRequest, match="empty prompt"):
        router.route(RouteRequest("", emb), candidates(), 1)
    with pytest.raises(ConfigError, match="retrain"):
        router.route(RouteRequest("court", emb), candidates(("someone-else",)), 1)
    with pytest.raises(ConfigError, match="generalist"):
        fit_coe(two_topic_outcomes(), generalist="nobody")
    router.save(tmp_path / "coe")
    loaded = ROUTERS["coe"](state=str(tmp_path / "coe"))
    assert loaded.route(RouteRequest("court", emb), candidates(), 3).to_dict() == \
        router.route(RouteRequest("court", emb), candidates(), 3).to_dict()
    with pytest.raises(ConfigError, match="trained for router 'coe'"):
        ROUTERS["knn"](state=str(tmp_path / "coe"))
