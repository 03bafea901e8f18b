"""Neighbours router: blended scores by hand, specialists found, teams for k > 1, state."""

from __future__ import annotations

import numpy as np
import pytest

from experts_registry.errors import ConfigError, InvalidRequest
from router import ROUTERS, RouteRequest
from router.encoder import HashingEncoder
from router.fit import fit_knn, tune_knn
from router.knn import KnnRouter, nearest, neighbour_scores
from tests.router_fakes import candidates, two_topic_outcomes


def test_blended_score_by_hand():
    sims = np.array([0.9, 0.8])
    correct = np.array([[1.0, 0.0], [1.0, 1.0]])
    prior = np.array([0.2, 0.8])
    score, w = neighbour_scores(sims, correct, prior, tau=0.0, alpha=1.0)   # uniform weights
    assert score == pytest.approx([(2 + 0.2) / 3, (1 + 0.8) / 3])
    score, w = neighbour_scores(sims, correct, prior, tau=0.1, alpha=0.0)   # w = [1, e^-1]
    e = np.exp(-1.0)
    assert w == pytest.approx([1.0, e])
    assert score == pytest.approx([1.0, e / (1 + e)])


def test_missing_records_do_not_count():
    score, _ = neighbour_scores(np.array([1.0, 1.0]), np.array([[np.nan], [1.0]]), np.array([0.0]), 0.0, 0.0)
    assert score == pytest.approx([1.0])


def test_nearest_excludes_self_and_sorts():
    x = np.eye(3, dtype=np.float32)
    idx, sims = nearest(x, x[1] * 0.9 + x[0] * 0.1, 2)
    assert idx.tolist() == [1, 0]
    idx, _ = nearest(x, x[1], 2, exclude=1)
    assert 1 not in idx.tolist()


def test_routes_to_the_specialist_and_explains():
    router = fit_knn(two_topic_outcomes(), tune=False, n_neighbors=10, alpha=2.0)
    text = "integral algebra equation"
    d = router.route(RouteRequest(text, HashingEncoder(64).encode([text])[0]), candidates(), k=1)
    assert d.experts == ["mathy"]
    why = d.choices[0].why
    assert why["neighbours"] == 10 and why["neighbours_right"] == 10 and why["global_accuracy"] == 0.5
    assert "10 nearest recorded questions" in d.reason and "mathy (10/10 neighbours right" in d.reason


def test_team_for_k3_is_the_best_local_vote():
    outcomes = two_topic_outcomes()
    router = fit_knn(outcomes, tune=False, n_neighbors=10)
    text = "tort plaintiff court"
    d = router.route(RouteRequest(text, HashingEncoder(64).encode([text])[0]), candidates(), k=3)
    assert sorted(d.experts) == sorted(["mathy", "lawyer", "middling"])
    assert d.experts[0] == "lawyer"
    assert "team whose vote was right most often" in d.reason


def test_tuning_picks_from_the_grid_by_leave_one_out():
    outcomes = two_topic_outcomes(n_per_topic=40)
    correct = outcomes.correct.copy()
    correct[:, 2] = [1.0] * 40 + [1.0, 0.0] * 20        # middling: best overall (75%), no specialist
    grid = {"n_neighbors": (1, 10), "tau": (0.0,), "alpha": (1.0, 1000.0)}
    best = tune_knn(correct, outcomes.embeddings, grid)
    # a huge alpha means "always the globally best expert" (75%); neighbours find the lawyer (100%)
    assert best["alpha"] == 1.0 and best["n_neighbors"] in (1, 10)


def test_errors_and_state_round_trip(tmp_path):
    router = fit_knn(two_topic_outcomes(), tune=False, encoder="hashing-64")
    emb = HashingEncoder(64).encode(["court"])[0]
    with pytest.raises(InvalidRequest, match="embedding"):
        router.route(RouteRequest("court"), candidates(), 1)
    with pytest.raises(InvalidRequest, match="empty prompt"):
        router.route(RouteRequest(" ", emb), candidates(), 1)
    with pytest.raises(ConfigError, match="retrain"):
        router.route(RouteRequest("court", emb), candidates(("other",)), 1)
    with pytest.raises(ConfigError, match="unknown knn option"):
        KnnRouter(("a",), np.zeros((1, 2)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), bogus=1)
    with pytest.raises(ConfigError, match="no trained state"):
        ROUTERS["knn"](state=None)
    router.save(tmp_path / "knn", {"fit_on": {"questions": "x"}})
    loaded = ROUTERS["knn"](state=str(tmp_path / "knn"))
    assert loaded.params == router.params and loaded.encoder == "hashing-64"
    for k in (1, 2):
        assert loaded.route(RouteRequest("court", emb), candidates(), k).to_dict() == \
            router.route(RouteRequest("court", emb), candidates(), k).to_dict()


def test_top_n_breaks_ties_by_index_and_batches_find_the_same_neighbours():
    from router.knn import nearest_many, top_n

    sims = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5], dtype=np.float32)
    assert top_n(sims, 3).tolist() == [1, 3, 0]          # 0.9, 0.9, then the first 0.5
    assert top_n(sims, 10).tolist() == [1, 3, 0, 2, 5, 4]
    assert top_n(sims + np.float32(1e-7) * np.arange(6), 3).tolist() == [1, 3, 0]   # below the rounding
    rng = np.random.default_rng(0)
    table = rng.standard_normal((300, 16)).astype(np.float32)
    table[10] = table[20] = table[30]                    # exact ties
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    queries[0] = table[10]
    idx, sims = nearest_many(table, queries, 25)
    for i, q in enumerate(queries):
        one_idx, one_sims = nearest(table, q, 25)
        assert one_idx.tolist() == idx[i].tolist() and np.allclose(one_sims, sims[i])
    assert idx[0, :3].tolist() == [10, 20, 30]
