"""Fitting routers on recorded outcomes (the :class:`Outcomes` of a replay or a profile run).

scikit-learn is imported inside :func:`fit_coe` only.  Every fitter takes the
outcomes and options and returns a ready router; :mod:`router.training` adds
validation scores and saves the state.
"""

from __future__ import annotations

from itertools import product
from typing import Sequence

import numpy as np

from experts_registry.errors import ValidationFailed

from .coe import CategoryRouter, category_map, normalised_entropy
from .encoder import Encoder
from .knn import DEFAULTS as KNN_DEFAULTS, KnnRouter, neighbour_scores
from .outcomes import Outcomes, mean_or
from .profiles import build_profile
from .skills import SkillsRouter

KNN_GRID = {"n_neighbors": (50, 100, 200, 400), "tau": (0.0, 0.1), "alpha": (5.0, 20.0, 50.0, 200.0)}


def fit_skills(outcomes: Outcomes, encoder: Encoder | None = None,
               question_skills: Sequence[Sequence[str]] | None = None, **options) -> SkillsRouter:
    return SkillsRouter(build_profile(outcomes, question_skills, encoder), **options)


def _labels(outcomes: Outcomes, label: str) -> np.ndarray:
    if label not in outcomes.labels:
        raise ValidationFailed(f"the coe router needs a {label!r} label per question", param="label")
    y = np.array([str(v) for v in outcomes.labels[label]])
    if len(set(y)) < 2:
        raise ValidationFailed("the coe router needs at least two categories", param="label")
    return y


def category_accuracy(correct: np.ndarray, y: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    return np.stack([mean_or(correct[y == c], axis=0, default=0.0) for c in categories])


def linear_classifier(x: np.ndarray, y: np.ndarray, c: float = 1.0, seed: int = 0):
    """(class names, weights (C, d), bias (C,)) of a multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)
    weights, bias = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:          # binary: sigmoid(w x + b) == softmax([0, w x + b])
        weights, bias = np.vstack([np.zeros_like(weights), weights]), np.concatenate([[0.0], bias])
    return [str(v) for v in clf.classes_], weights.astype(np.float32), bias.astype(np.float32)


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_coe(outcomes: Outcomes, label: str = "category", budget: float | None = None,
            generalist: str | None = None, entropy_threshold: float | None = None,
            encoder: str | None = None, c: float = 1.0, seed: int = 0) -> CategoryRouter:
    """Classifier over ``label``, category -> expert map, generalist and entropy threshold.

    ``entropy_threshold=None`` tunes it on a held-out fifth of the outcomes.
    """
    x, y = outcomes.require_embeddings("coe"), _labels(outcomes, label)
    categories, weights, bias = linear_classifier(x, y, c, seed)
    acc = category_accuracy(outcomes.correct, y, categories)
    freq = np.array([(y == cat).sum() for cat in categories], dtype=np.float64)
    params = np.array([outcomes.active_params.get(e) or 0.0 for e in outcomes.experts], dtype=np.float64)
    mapping = category_map(acc, freq, params, budget)
    generalist = generalist or outcomes.experts[int(np.argmax(outcomes.accuracy()))]
    router = CategoryRouter(categories, outcomes.experts, weights, bias, acc, mapping,
                            generalist, 1.0, encoder)
    if entropy_threshold is None:
        entropy_threshold = _tune_threshold(outcomes, label, budget, generalist, c, seed)
    router.entropy_threshold = float(entropy_threshold)
    return router


def _tune_threshold(outcomes: Outcomes, label, budget, generalist, c, seed) -> float:
    """The entropy threshold that maximises accuracy on a held-out fifth (1.0 = never defer)."""
    rng = np.random.default_rng(seed)
    held = rng.random(len(outcomes)) < 0.2
    inner = fit_coe(outcomes.subset(~held), label, budget, generalist, 1.0, None, c, seed)
    val = outcomes.subset(held)
    g = inner.experts.index(generalist)
    probs = [inner.probabilities(e) for e in val.embeddings]
    ent = np.array([normalised_entropy(p) for p in probs])
    mapped = np.array([inner.mapping[int(np.argmax(p))] for p in probs])
    right = np.nan_to_num(val.correct)
    by_map, by_gen = right[np.arange(len(val)), mapped], right[:, g]
    best, best_acc = 1.0, by_map.mean()
    for t in np.linspace(0.05, 0.95, 19):
        acc = np.where(ent > t, by_gen, by_map).mean()
        if acc > best_acc + 1e-9:
            best, best_acc = float(t), acc
    return best


def _neighbour_table(x: np.ndarray, n: int, chunk: int = 1024):
    """Leave-one-out nearest neighbours of every row: (idx, sims), each (rows, n)."""
    n = min(n, len(x) - 1)
    idx = np.zeros((len(x), n), dtype=np.int64)
    sims = np.zeros((len(x), n), dtype=np.float32)
    for start in range(0, len(x), chunk):
        s = x[start:start + chunk] @ x.T
        s[np.arange(len(s)), np.arange(start, start + len(s))] = -np.inf
        part = np.argpartition(-s, n - 1, axis=1)[:, :n]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        idx[start:start + chunk] = np.take_along_axis(part, order, axis=1)
        sims[start:start + chunk] = np.take_along_axis(ps, order, axis=1)
    return idx, sims


def knn_loo_accuracy(correct: np.ndarray, idx: np.ndarray, sims: np.ndarray, prior: np.ndarray,
                     n_neighbors: int, tau: float, alpha: float) -> float:
    """Leave-one-out top-1 accuracy of the blended score for one setting.

    ``prior`` is (m,) or, per question, (n, m)."""
    right = np.nan_to_num(correct)
    hits = []
    for start in range(0, len(idx), 512):
        i, s = idx[start:start + 512, :n_neighbors], sims[start:start + 512, :n_neighbors]
        pr = prior[start:start + 512] if prior.ndim == 2 else prior
        w = np.exp((s - s[:, :1]) / tau) if tau > 0 else np.ones_like(s)
        c = correct[i]                                          # (b, K, m)
        valid = ~np.isnan(c)
        score = ((w[..., None] * np.where(valid, c, 0)).sum(1) + alpha * pr) / \
                ((w[..., None] * valid).sum(1) + alpha)
        pick = np.argmax(score, axis=1)
        hits.append(right[np.arange(start, start + len(i)), pick])
    return float(np.concatenate(hits).mean())


def out_of_fold_category_prior(x: np.ndarray, y: np.ndarray, correct: np.ndarray,
                               c: float = 1.0, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Per question, sum_c p(c | x) acc[c, m] from a classifier that never saw it."""
    fold = np.random.default_rng(seed).integers(0, folds, len(y))
    prior = np.zeros(correct.shape, dtype=np.float32)
    for f in range(folds):
        fit, held = fold != f, fold == f
        names, w, b = linear_classifier(x[fit], y[fit], c, seed)
        acc = category_accuracy(correct[fit], y[fit], names)
        prior[held] = _softmax_rows(x[held] @ w.T + b) @ acc
    return prior


def fit_knn(outcomes: Outcomes, tune: bool = True, encoder: str | None = None,
            label: str = "category", c: float = 1.0, **params) -> KnnRouter:
    """The neighbours router; ``tune`` picks n_neighbors, tau, alpha and the prior by leave-one-out.

    With ``label`` present in the outcomes, a category classifier is fitted for the
    category prior."""
    x = outcomes.require_embeddings("knn")
    answers, gold = outcomes.letters()
    categories, priors = None, {"global": outcomes.accuracy()}
    if label in outcomes.labels and len(set(outcomes.labels[label])) >= 2:
        y = np.array([str(v) for v in outcomes.labels[label]])
        names, w, b = linear_classifier(x, y, c)
        categories = {"cat_names": np.array(names), "cat_weights": w, "cat_bias": b,
                      "cat_accuracy": category_accuracy(outcomes.correct, y, names)}
        if tune and len(outcomes) > 20:
            priors["category"] = out_of_fold_category_prior(x, y, outcomes.correct, c)
    if tune and len(outcomes) > 20:
        params = {**tune_knn(outcomes.correct, x, priors=priors), **params}
    return KnnRouter(outcomes.experts, x, outcomes.correct, answers, gold, encoder, categories,
                     **{**KNN_DEFAULTS, **params})


def tune_knn(correct: np.ndarray, x: np.ndarray, grid=KNN_GRID, priors: dict | None = None) -> dict:
    """The grid setting (and prior) with the best leave-one-out top-1 accuracy."""
    priors = priors or {"global": mean_or(correct, axis=0, default=0.0)}
    idx, sims = _neighbour_table(x, max(grid["n_neighbors"]))
    scored = [(knn_loo_accuracy(correct, idx, sims, priors[p], min(k, idx.shape[1]), t, a), -k, t, a, p)
              for p in priors for k, t, a in product(grid["n_neighbors"], grid["tau"], grid["alpha"])]
    acc, neg_k, tau, alpha, prior = max(scored)
    return {"n_neighbors": -neg_k, "tau": tau, "alpha": alpha, "prior": prior}


__all__ = ["fit_skills", "fit_coe", "fit_knn", "tune_knn", "category_accuracy", "linear_classifier",
           "neighbour_scores"]
