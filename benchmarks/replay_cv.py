"""``conclave bench replay --folds N [--seeds S]``: replay over repeated splits, so routers can be told apart.

Every question is a test question exactly once per seed: the questions are cut into N folds by a
seeded hash of their id, and each fold is replayed with the others as training data.  Per system
(every baseline, every router at every k) the result gives the mean and standard deviation of the
folds' accuracies, and, against each baseline, the paired difference over the same questions (the
split's noise cancels): its mean, a bootstrap 95% interval and the one-sided p-value that the
router is no better.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np

from experts_registry.errors import InvalidRequest
from router.encoder import Encoder
from router.evaluation import per_question
from router.replay_data import ReplaySet
from router.vote import vote_correct

from .replay import k_label, run_replay

BOOTSTRAP = 2000


def fold_of(question_ids: Sequence[str], folds: int, seed: int) -> np.ndarray:
    h = [int.from_bytes(hashlib.sha256(f"cv{seed}:{q}".encode()).digest()[:8], "big") for q in question_ids]
    return np.array(h, dtype=np.uint64) % np.uint64(folds)


class _Collector:
    """A run_replay sink: per system, the per-question (right, calls, active params) of one split."""

    def __init__(self, test: ReplaySet):
        self.test, self.rows = test, {}

    def __call__(self, name: str, k: int, cols: np.ndarray, decisions: list | None) -> None:
        t = self.test
        if decisions is None:
            right = vote_correct(np.take_along_axis(t.answers, cols, 1), t.gold)
            size = np.array([t.active_params.get(e) or 0.0 for e in t.experts])
            params = np.array([size[list(set(r))].sum() for r in cols.tolist()])
            calls = np.array([len(set(r)) for r in cols.tolist()], dtype=np.float64)
            self.rows[f"baseline:{name}"] = (right, calls, params)
        else:
            self.rows[f"{name}@k{k_label(k)}"] = per_question(decisions, t.experts, t.answers, t.gold,
                                                               t.active_params)


def cross_validate(data: ReplaySet, routers: Sequence[str], ks: Sequence[int], encoder: Encoder,
                   cache_dir=None, folds: int = 5, seeds: int = 1, cost_weights: Sequence[float] = ()) -> dict:
    if folds < 2 or seeds < 1:
        raise InvalidRequest("--folds must be at least 2 and --seeds at least 1", param="folds")
    per_split: dict[str, dict[int, tuple]] = {}
    splits = []
    for seed in range(seeds):
        fold = fold_of(data.question_ids, folds, seed)
        for f in range(folds):
            train, test = data.subset(fold != f), data.subset(fold == f)
            sink = _Collector(test)
            result = run_replay(train, test, routers, ks, encoder, cache_dir,
                                {"cv_seed": seed, "fold": f, "folds": folds}, sink=sink, cost_weights=cost_weights)
            splits.append({"seed": seed, "fold": f, "n_train": len(train), "n_test": len(test),
                           "figures": result["figures"]})
            for name, rows in sink.rows.items():
                per_split.setdefault(name, {})[len(splits) - 1] = rows
    systems = {name: summarise(list(rows.values())) for name, rows in per_split.items()}
    return {"mode": "cross-validation", "folds": folds, "seeds": seeds, "n": len(data),
            "experts": list(data.experts), "encoder": encoder.name, "ks": [k_label(k) for k in ks],
            "systems": systems, "paired": paired(per_split), "splits": splits}


def summarise(rows: list[tuple]) -> dict:
    acc = [float(r[0].mean()) for r in rows]
    return {"accuracy": round(float(np.mean(acc)), 4), "accuracy_std": round(float(np.std(acc)), 4),
            "accuracy_per_split": [round(a, 4) for a in acc],
            "calls_per_question": round(float(np.mean(np.concatenate([r[1] for r in rows]))), 3),
            "active_params_per_question": round(float(np.mean(np.concatenate([r[2] for r in rows]))), 2),
            "n_splits": len(rows)}


def paired(per_split: Mapping[str, Mapping[int, tuple]], seed: int = 0) -> dict:
    """Every router system against every baseline, on the same questions (the splits both ran on)."""
    bases = [n for n in per_split if n.startswith("baseline:") and n != "baseline:oracle"]
    out = {}
    for name in (n for n in per_split if not n.startswith("baseline:")):
        out[name] = {}
        for b in bases:
            common = sorted(set(per_split[name]) & set(per_split[b]))
            if common:
                diff = np.concatenate([per_split[name][i][0] - per_split[b][i][0] for i in common])
                out[name][b] = bootstrap_diff(diff, seed)
    return out


def bootstrap_diff(diff: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP) -> dict:
    rng = np.random.default_rng(seed)
    means = np.concatenate([diff[rng.integers(0, len(diff), (100, len(diff)))].mean(axis=1)
                            for _ in range(resamples // 100)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": round(float(diff.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "p_no_better": round(float((means <= 0).mean()), 4)}


def cv_table(result: Mapping) -> str:
    """Mean ± std per system, then the paired differences against the baselines."""
    head = (f"replay, {result['folds']}-fold cross-validation x {result['seeds']} seed(s): {result['n']} questions, "
            f"{len(result['experts'])} experts, encoder {result['encoder']}")
    lines = [head, f"{'system':34} {'accuracy %':>16} {'calls/q':>8} {'active B/q':>10}"]
    for name, s in result["systems"].items():
        lines.append(f"{name:34} {100 * s['accuracy']:8.2f} ± {100 * s['accuracy_std']:4.2f} "
                     f"{s['calls_per_question']:8.2f} {s['active_params_per_question']:10.2f}")
    lines.append("paired differences (points; bootstrap 95% CI; p = P(no better)):")
    for name, against in result["paired"].items():
        for base, d in against.items():
            lines.append(f"  {name:28} vs {base:28} {100 * d['diff']:+6.2f} "
                         f"[{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}] p={d['p_no_better']:.4f}")
    return "\n".join(lines)
