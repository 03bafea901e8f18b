"""Replay: file loading, votes, baselines by hand, and the bench CLI on tiny files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.cli import bench
from benchmarks.replay import baselines
from router.replay_data import hash_split, load_models, load_replay
from router.vote import vote
from tests.router_fakes import write_replay_files



@pytest.fixture
def files(tmp_path):
    return write_replay_files(tmp_path)


def test_vote_majority_then_rank():
    assert vote(np.array([[0, 1, 1], [2, 0, 1], [-1, 3, 4], [-1, -1, -1], [5, -1, 5]])).tolist() == [1, 2, 3, -1, 5]


def test_load_replay_letters_none_and_blank(files):
    q, p, m = files
    data = load_replay(q, p, load_models(m), "three")
    assert data.experts == ("a", "b", "c") and len(data) == 7
    assert data.texts[0].startswith("integral algebra equation number 0?\nA. x\nB. y")
    c = data.correct()
    assert c[5, 0] == 0.0                     # NONE is wrong
    assert np.isnan(c[2, 2])                  # blank is no record
    assert data.metadata(0) == {"category": "math", "src": "ori_mmlu-math"}


def test_baselines_by_hand(files):
    q, p, m = files
    data = load_replay(q, p, load_models(m), "three")
    b = baselines(data, data)
    assert b["best_single"]["experts"] == ["a"] and b["best_single"]["accuracy"] == round(4 / 7, 4)
    assert b["vote_top3"]["accuracy"] == round(6 / 7, 4)          # q6: b outranks c in the tie
    assert b["vote_top3"]["mean_active_params_b"] == 23.8
    assert b["category_best"]["experts"] == {"law": "b", "math": "a"}
    assert b["category_best"]["accuracy"] == round(6 / 7, 4)
    assert b["category_best"]["mean_active_params_b"] == round((4 * 7 + 3 * 13) / 7, 2)
    assert b["oracle"]["accuracy"] == round(6 / 7, 4)
    assert "vote_top5" not in b


def test_hash_split_is_seeded_and_stable():
    ids = [str(i) for i in range(2000)]
    a, b = hash_split(ids, 0, 0.2), hash_split(ids, 0, 0.2)
    assert np.array_equal(a, b) and 0.17 < a.mean() < 0.23
    assert not np.array_equal(a, hash_split(ids, 1, 0.2))


def test_cli_replay_on_tiny_files(files, tmp_path):
    q, p, m = files
    out = tmp_path / "out.json"
    args = ["replay", "--train-questions", q, "--train-predictions", p, "--test-questions", q,
            "--test-predictions", p, "--models", m, "--pool", "three", "--router", "knn",
            "--router", "skills", "--router", "coe", "--k", "1", "--k", "2", "--encoder", "hashing-64",
            "--no-cache", "--json", out]
    r = CliRunner().invoke(bench, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    assert "[baseline] best_single" in r.output and "knn" in r.output
    res = json.loads(out.read_text())
    assert set(res["routers"]) == {"knn", "skills", "coe"}
    assert res["figures"]["best_single"] == round(4 / 7, 4)
    skills = res["routers"]["skills"]["k1"]
    # labels route math -> a (4/4) and law -> b (2/3): the router reproduces the category baseline
    assert skills["accuracy"] == round(6 / 7, 4) and skills["n"] == 7
    for name in res["routers"]:
        assert 0.0 <= res["figures"][f"{name}@k2"] <= res["baselines"]["oracle"]["accuracy"] + 1e-9


def test_cli_errors_are_clear(files):
    q, p, m = files
    r = CliRunner().invoke(bench, ["replay", "--train-questions", str(q), "--train-predictions", str(p),
                                   "--models", str(m), "--pool", "nope", "--encoder", "hashing-8"])
    assert r.exit_code != 0 and "unknown pool 'nope'" in r.output
    r = CliRunner().invoke(bench, ["replay", "--test-questions", str(q)])
    assert r.exit_code != 0 and "give both" in r.output
    r = CliRunner().invoke(bench, ["replay", "--train-questions", str(q) + ".missing"])
    assert r.exit_code != 0 and "not found" in r.output
    r = CliRunner().invoke(bench, ["replay", "--help"])
    assert "conclave bench replay" in r.output and "--router" in r.output
