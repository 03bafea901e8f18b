"""Replay evaluation: fit routers on recorded answers, route held-out questions, score them.

No model is called: every expert's answer to every question is on file, so a
routing decision is scored by looking its experts' answers up (k > 1: majority
vote, ties to the router's higher-ranked expert).  Baselines, all chosen on the
train side: best single expert, category -> best expert (true category label),
majority vote of the top-3 / top-5 experts, and the per-question oracle.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np

from experts_registry.errors import InvalidRequest
from router.encoder import Encoder, cached_encode
from router.evaluation import chosen_columns, replay_experts, route_all, score_columns, score_decisions
from router.correct import AUTO
from router.correct_fit import fit_correct
from router.fit import fit_coe, fit_knn, fit_skills
from router.replay_data import ReplaySet


Sink = Callable[[str, int, np.ndarray, list | None], None]   # name, k, columns, decisions

# name -> fitter(train outcomes, encoder) -> router.  Variants of one router share its code.
REPLAY_ROUTERS: dict[str, Callable] = {
    "skills": lambda o, enc: fit_skills(o, enc, sample=False),
    "skills-sampled": lambda o, enc: fit_skills(o, enc, sample=True, seed=0),
    "skills-embed": lambda o, enc: fit_skills(o, enc, sample=False, use_labels=False),
    "coe": lambda o, enc: fit_coe(o, encoder=enc.name),
    "knn": lambda o, enc: fit_knn(o, encoder=enc.name),
    "correct": lambda o, enc: fit_correct(o, encoder=enc.name),
}
ADAPTIVE = ("correct",)      # routers that answer k = "auto"


def k_label(k: int) -> str:
    return "auto" if k == AUTO else str(k)


def resolve_routers(names: Sequence[str]) -> list[str]:
    if not names or "all" in names:
        return list(REPLAY_ROUTERS)
    unknown = [n for n in names if n not in REPLAY_ROUTERS]
    if unknown:
        raise InvalidRequest(f"unknown router {', '.join(unknown)}: choose from "
                             f"{', '.join(REPLAY_ROUTERS)} or 'all'", param="router")
    return list(dict.fromkeys(names))


def baselines(train: ReplaySet, test: ReplaySet, sink: Sink | None = None,
              emb_train: np.ndarray | None = None, emb_test: np.ndarray | None = None) -> dict[str, dict]:
    """``sink(name, k, columns, None)`` sees each baseline's per-question experts.  With embeddings,
    ``category_predicted`` maps the category a linear classifier predicts from the embedding (what
    live traffic, which has no label, can do) to its best expert."""
    acc = np.nan_to_num(np.nanmean(np.where(np.isnan(train.correct()), np.nan, train.correct()), axis=0))
    order = np.argsort(-acc, kind="stable")
    n, out = len(test), {}

    def fixed(cols):
        return np.tile(np.asarray(cols, dtype=np.int64), (n, 1))

    def score(name, cols, experts):
        if sink:
            sink(name, cols.shape[1], cols, None)
        return {**score_columns(cols, test.answers, test.gold, test.experts, test.active_params),
                "experts": experts}

    out["best_single"] = score("best_single", fixed(order[:1]), [test.experts[order[0]]])
    out["category_best"] = _category_best(train, test, acc, score)
    if emb_train is not None and len(set(train.labels.get("category", ()))) > 1:
        out["category_predicted"] = _category_predicted(train, test, emb_train, emb_test, acc, score)
    for k in (3, 5):
        if len(order) >= k:
            out[f"vote_top{k}"] = score(f"vote_top{k}", fixed(order[:k]), [test.experts[i] for i in order[:k]])
    oracle = np.nanmax(np.nan_to_num(test.correct()), axis=1)
    out["oracle"] = {"accuracy": round(float(oracle.mean()), 4), "n": n}
    return out


def _category_best(train: ReplaySet, test: ReplaySet, acc: np.ndarray, score) -> dict:
    if "category" not in train.labels:
        return {"accuracy": None, "note": "no category labels"}
    y, correct = np.array(train.labels["category"]), np.nan_to_num(train.correct())
    best = {c: int(np.argmax(correct[y == c].mean(axis=0))) for c in set(y)}
    fallback = int(np.argmax(acc))
    cols = np.array([[best.get(c, fallback)] for c in test.labels["category"]], dtype=np.int64)
    return score("category_best", cols, {c: test.experts[i] for c, i in sorted(best.items())})


def _category_predicted(train: ReplaySet, test: ReplaySet, emb_train, emb_test, acc, score) -> dict:
    from router.fit import linear_classifier

    y, correct = np.array(train.labels["category"]), np.nan_to_num(train.correct())
    names, w, b = linear_classifier(emb_train, y)
    best = {c: int(np.argmax(correct[y == c].mean(axis=0))) for c in names}
    predicted = np.array(names)[np.argmax(emb_test @ w.T + b, axis=1)]
    cols = np.array([[best.get(c, int(np.argmax(acc)))] for c in predicted], dtype=np.int64)
    return score("category_predicted", cols, {c: test.experts[i] for c, i in sorted(best.items())})


def evaluate_router(name: str, train: ReplaySet, test: ReplaySet, emb_train, emb_test,
                    encoder: Encoder, ks: Sequence[int], sink: Sink | None = None,
                    cost_weights: Sequence[float] = ()) -> dict:
    t0 = time.perf_counter()
    router = REPLAY_ROUTERS[name](train.outcomes(emb_train), encoder)
    fit_s = time.perf_counter() - t0
    candidates = replay_experts(test.experts, test.active_params)
    metadata = [test.metadata(i) for i in range(len(test))]
    result = {"fit_seconds": round(fit_s, 2)}
    if hasattr(router, "params"):
        result["params"] = dict(router.params)
    for k in ks:
        if k == AUTO and name not in ADAPTIVE:
            continue
        t0 = time.perf_counter()
        decisions = route_all(router, test.texts, emb_test, metadata, candidates, k)
        per_q = (time.perf_counter() - t0) / max(len(test), 1)
        if sink:
            sink(name, k, chosen_columns(decisions, test.experts, max(k, 1)), decisions)
        result[f"k{k_label(k)}"] = {**score_decisions(decisions, test.experts, test.answers, test.gold, k,
                                             test.active_params),
                           "route_ms": round(per_q * 1000, 3), "example": decisions[0].reason}
    if cost_weights and hasattr(router, "with_cost"):
        result["cost_curve"] = cost_curve(name, router, test, emb_test, metadata, candidates, cost_weights, sink)
    return result


def cost_curve(name, router, test: ReplaySet, emb_test, metadata, candidates, weights, sink=None) -> list[dict]:
    """k = 1 accuracy and mean active parameters as the price weight grows (cost-aware routing)."""
    curve = []
    for w in weights:
        decisions = route_all(router.with_cost(w), test.texts, emb_test, metadata, candidates, 1)
        if sink:
            sink(f"{name}-cost{w:g}", 1, chosen_columns(decisions, test.experts, 1), decisions)
        curve.append({"cost_weight": w, **score_decisions(decisions, test.experts, test.answers, test.gold, 1,
                                                          test.active_params)})
    return curve


def run_replay(train: ReplaySet, test: ReplaySet, routers: Sequence[str], ks: Sequence[int],
               encoder: Encoder, cache_dir=None, split: Mapping | None = None,
               sink: Sink | None = None, cost_weights: Sequence[float] = ()) -> dict:
    """``sink(name, k, columns (questions, k), decisions or None)`` sees every router's and
    baseline's per-question choices (``bench replay --out`` writes them as run folders)."""
    if not len(train) or not len(test):
        raise InvalidRequest(f"replay needs questions on both sides (train {len(train)}, test {len(test)})")
    if list(train.experts) != list(test.experts):
        raise InvalidRequest("train and test files must cover the same experts")
    names = resolve_routers(routers)
    emb_train = cached_encode(encoder, train.texts, cache_dir)
    emb_test = cached_encode(encoder, test.texts, cache_dir)
    result = {"n_train": len(train), "n_test": len(test), "experts": list(train.experts),
              "encoder": encoder.name, "ks": list(ks), "split": dict(split or {}),
              "baselines": baselines(train, test, sink, emb_train, emb_test), "routers": {}}
    for name in names:
        result["routers"][name] = evaluate_router(name, train, test, emb_train, emb_test, encoder, ks, sink,
                                                  cost_weights)
    result["figures"] = figures(result)
    return result


def figures(result: Mapping) -> dict[str, float]:
    """Flat name -> accuracy, e.g. {'best_single': 0.44, 'knn@k1': 0.48}."""
    out = {name: b["accuracy"] for name, b in result["baselines"].items()}
    for name, r in result["routers"].items():
        for k in result["ks"]:
            if f"k{k_label(k)}" in r:
                out[f"{name}@k{k_label(k)}"] = r[f"k{k_label(k)}"]["accuracy"]
    return out


def table(result: Mapping) -> str:
    rows = [("system", "k", "accuracy", "calls/q", "active B/q")]
    sizes = {"best_single": 1, "category_best": 1, "category_predicted": 1, "vote_top3": 3, "vote_top5": 5,
             "oracle": "-"}
    for name, b in result["baselines"].items():
        acc = "-" if b.get("accuracy") is None else f"{100 * b['accuracy']:.2f}"
        rows.append((f"[baseline] {name}", str(sizes.get(name, "")), acc, str(b.get("calls_per_question", "-")),
                     str(b.get("mean_active_params_b", "-"))))
    for name, r in result["routers"].items():
        for k in result["ks"]:
            s = r.get(f"k{k_label(k)}")
            if s:
                rows.append((name, k_label(k), f"{100 * s['accuracy']:.2f}", str(s["calls_per_question"]),
                             str(s["mean_active_params_b"])))
        for point in r.get("cost_curve", []):
            rows.append((f"{name} cost={point['cost_weight']:g}", "1", f"{100 * point['accuracy']:.2f}", "1.0",
                         str(point["mean_active_params_b"])))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    head = f"replay: {result['n_train']} train / {result['n_test']} test questions, {len(result['experts'])} experts"
    return "\n".join([head, *lines])
