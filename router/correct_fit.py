"""Fitting the correctness router on recorded outcomes (scikit-learn, imported here only).

Every feature of a training row is computed out of fold: its neighbours are the *other* training
questions, and the category and embedding classifiers that score it were fitted without it.  The
logistic model on those features is then fitted on all rows, and the stopping rule of adaptive k
on the model's probabilities for the training questions.
"""

from __future__ import annotations

import numpy as np

from .adaptive import Stopping, fit_stopping, vote_weights
from .correct import CorrectnessRouter
from .correct_features import KS, SEARCH_DIMS, neighbour_accuracy, probabilities, question_features, search_vectors
from .fit import _neighbour_table, category_accuracy, linear_classifier
from .outcomes import Outcomes

FOLDS = 5


def _folds(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, FOLDS, n)


def expert_classifiers(x: np.ndarray, correct: np.ndarray, c: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """One logistic regression per expert on the embedding: (weights (m, d), bias (m,))."""
    from sklearn.linear_model import LogisticRegression

    m = correct.shape[1]
    w, b = np.zeros((m, x.shape[1]), dtype=np.float32), np.zeros(m, dtype=np.float32)
    for j in range(m):
        ok = ~np.isnan(correct[:, j])
        y = correct[ok, j]
        if len(set(y.tolist())) < 2:
            b[j] = 4.0 if (y.mean() if len(y) else 0) > 0.5 else -4.0
            continue
        clf = LogisticRegression(C=c, max_iter=2000).fit(x[ok], y)
        w[j], b[j] = clf.coef_[0], clf.intercept_[0]
    return w, b


def out_of_fold_expert_logits(x: np.ndarray, correct: np.ndarray, seed: int = 0) -> np.ndarray:
    fold, out = _folds(len(x), seed), np.zeros(correct.shape, dtype=np.float32)
    for f in range(FOLDS):
        fit, held = fold != f, fold == f
        if held.any() and fit.sum() > 1:
            w, b = expert_classifiers(x[fit], correct[fit])
            out[held] = x[held] @ w.T + b
    return out


def category_model(outcomes: Outcomes, x: np.ndarray, label: str):
    """(names, weights, bias, accuracy per category, out-of-fold prior per question); one pseudo
    category (the global accuracy) when the outcomes carry no usable label."""
    right = np.nan_to_num(outcomes.correct)
    y = np.array([str(v) for v in outcomes.labels.get(label, ())])
    if len(y) != len(x) or len(set(y.tolist())) < 2:
        acc = outcomes.accuracy()[None]
        zeros = np.zeros((1, x.shape[1]), dtype=np.float32)
        return np.array(["all"]), zeros, np.zeros(1, dtype=np.float32), acc, np.tile(acc, (len(x), 1))
    names, w, b = linear_classifier(x, y)
    return np.array(names), w, b, category_accuracy(right, y, names), _oof_category_prior(x, y, right)


def _oof_category_prior(x: np.ndarray, y: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Out-of-fold sum_c p(c | x) acc[c, m]; a fold whose training part has one category gets the
    plain accuracy of that part (tiny data sets)."""
    fold, out = _folds(len(x)), np.zeros(right.shape, dtype=np.float32)
    for f in range(FOLDS):
        fit, held = fold != f, fold == f
        if not held.any():
            continue
        if len(set(y[fit].tolist())) < 2:
            out[held] = right[fit].mean(axis=0) if fit.any() else right.mean(axis=0)
            continue
        names, w, b = linear_classifier(x[fit], y[fit])
        z = x[held] @ w.T + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        out[held] = (p / p.sum(axis=1, keepdims=True)) @ category_accuracy(right[fit], y[fit], names)
    return out


def fit_correct(outcomes: Outcomes, encoder: str | None = None, label: str = "category",
                budget: float = 3.0, c: float = 1.0, cost_weight: float = 0.0,
                search_dims: int | None = None) -> CorrectnessRouter:
    """``search_dims``: the dimensions neighbours are found on; default the first SEARCH_DIMS for
    the static encoder (PCA dimensions, most variance first), all of them for any other encoder."""
    x = outcomes.require_embeddings("correct")
    correct = outcomes.correct
    glob = outcomes.accuracy()
    if search_dims is None and str(encoder or "").startswith("static"):
        search_dims = SEARCH_DIMS
    search = search_vectors(x, search_dims)
    idx, sims = _neighbour_table(search, max(KS))
    nb = neighbour_accuracy(sims, correct[idx], glob)
    names, cw, cb, cacc, cat = category_model(outcomes, x, label)
    feats = question_features(nb, cat, out_of_fold_expert_logits(x, correct))
    weights, bias = _logistic(feats, correct, c)
    ew, eb = expert_classifiers(x, correct)
    params_b = np.array([outcomes.active_params.get(e) or 0.0 for e in outcomes.experts], dtype=np.float32)
    arrays = {"experts": np.array(outcomes.experts), "embeddings": search,
              "correct": correct, "global_accuracy": glob, "weights": weights, "bias": np.float32(bias),
              "cat_names": names, "cat_weights": cw, "cat_bias": cb, "cat_accuracy": cacc,
              "emb_weights": ew, "emb_bias": eb, "params_b": params_b}
    p = probabilities(feats, weights, bias)
    stopping = _stopping(outcomes, p, budget)
    return CorrectnessRouter(arrays, encoder, stopping, cost_weight=cost_weight)


def _logistic(feats: np.ndarray, correct: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """Weights and bias of P(right) over all recorded (question, expert) pairs.  Outcomes of one
    kind only (a tiny live slice where every answer was wrong, say) leave nothing to separate: the
    model is then the smoothed rate, the same for every expert, until more outcomes are recorded."""
    from sklearn.linear_model import LogisticRegression

    ok = ~np.isnan(correct)
    y = correct[ok]
    if len(set(y.tolist())) < 2:
        rate = (y.sum() + 1.0) / (len(y) + 2.0)
        return np.zeros(feats.shape[-1], dtype=np.float32), float(np.log(rate / (1 - rate)))
    model = LogisticRegression(C=c, max_iter=5000).fit(feats[ok], y)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def _stopping(outcomes: Outcomes, p: np.ndarray, budget: float) -> Stopping:
    """The adaptive-k rule fitted on the training questions' (out-of-fold-feature) probabilities."""
    answers, gold = outcomes.letters()
    order = np.argsort(-p, axis=1, kind="stable")
    fitted = fit_stopping(np.take_along_axis(answers, order, 1), np.take_along_axis(vote_weights(p), order, 1),
                          gold, budget)
    return Stopping(**fitted["rule"])


def calibration(p: np.ndarray, right: np.ndarray, bins: int = 10) -> dict:
    """Log-loss, Brier score and the reliability curve (mean predicted vs observed per bin)."""
    ok = ~np.isnan(right)
    p, y = np.clip(p[ok], 1e-6, 1 - 1e-6), right[ok]
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    curve = [{"predicted": round(float(p[which == b].mean()), 3), "observed": round(float(y[which == b].mean()), 3),
              "n": int((which == b).sum())} for b in range(bins) if (which == b).any()]
    return {"log_loss": round(float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), 4),
            "brier": round(float(np.mean((p - y) ** 2)), 4), "reliability": curve}
