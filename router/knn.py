"""Neighbours router: per request, the experts' accuracy on its nearest recorded questions.

    sim_i   = <e(q), e(x_i)> over the training questions x_i; keep the n_neighbors nearest
    w_i     = exp((sim_i - max sim) / tau)
    score_m = (sum_i w_i c_im + alpha * prior_m) / (sum_i w_i + alpha)

``prior`` is the expert's global accuracy (``prior="global"``), or its accuracy
on the request's category expected under a linear category classifier
(``prior="category"``: sum_c p(c | q) acc[c, m], the Composition-of-Experts
signal), so with few or far neighbours the score falls back to the best expert
overall or for the topic (alpha is in neighbour units).
For k > 1 the router picks the *team* whose majority vote was right most often
on the same neighbours (shrunk to its vote accuracy over all training
questions), searching the teams of k among the ``pool`` best-scored experts.
Hyper-parameters are chosen by leave-one-out on the training data
(:func:`router.fit.fit_knn`).
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from itertools import combinations
from typing import Sequence

import numpy as np

from experts_registry.errors import ConfigError
from experts_registry.model import Expert

from .base import Choice, Decision, RouteRequest
from .checks import trained_candidates
from .state import load_state, save_state
from .vote import vote_correct

DEFAULTS = {"n_neighbors": 50, "tau": 0.05, "alpha": 10.0, "team_pool": 7, "prior": "global"}
CATEGORY_ARRAYS = ("cat_names", "cat_weights", "cat_bias", "cat_accuracy")


def neighbour_scores(sims: np.ndarray, correct: np.ndarray, prior: np.ndarray,
                     tau: float, alpha: float):
    """Blended per-expert score from neighbour similarities (K,) and their outcomes (K, m)."""
    w = np.exp((sims - sims.max()) / tau) if tau > 0 else np.ones_like(sims)
    valid = ~np.isnan(correct)
    wc = (w[:, None] * np.where(valid, correct, 0.0)).sum(axis=0)
    wn = (w[:, None] * valid).sum(axis=0)
    return (wc + alpha * prior) / (wn + alpha), w


@lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


_ONE_THREAD = {"process": False}    # set once the whole process keeps BLAS to one thread


def single_threaded_blas():
    """One BLAS thread for a small product: multi-threaded OpenBLAS on a busy 2-core
    machine makes a 6k x 384 mat-vec 10-40x slower than one thread.  Nothing to do (and no
    cost) once :func:`limit_blas_threads` has limited the whole process."""
    ctl = None if _ONE_THREAD["process"] else _blas_controller()
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext()


def top_n(sims: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest of ``sims``, largest first, ties to the lower index.  Ranked on
    similarities rounded to 1e-5, so that one request and a batch (whose BLAS products differ in
    the last bits) find the same neighbours."""
    n = min(n, len(sims))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    neg = -np.round(sims, 5)
    cut = np.partition(neg, n - 1)[n - 1]
    above = np.flatnonzero(neg < cut)
    picked = np.concatenate([above, np.flatnonzero(neg == cut)[: n - len(above)]])
    return picked[np.lexsort((picked, neg[picked]))]


def limit_blas_threads(threads: int = 1, user_api: str | None = "blas") -> None:
    """Process-wide BLAS threads (a serving gateway, the routing benchmark): the products a request
    needs are small, and idle BLAS threads spinning on 2 cores slow every request down.
    ``user_api=None`` limits OpenMP pools too (not in a gateway: llama.cpp may run on OpenMP)."""
    ctl = _blas_controller()
    if ctl is not None:
        ctl.limit(limits=threads, user_api=user_api)
        _ONE_THREAD["process"] = threads == 1


def nearest(embeddings: np.ndarray, query: np.ndarray, n: int, exclude: int | None = None):
    with single_threaded_blas():
        sims = embeddings @ query
    if exclude is not None:
        sims[exclude] = -np.inf
    idx = top_n(sims, min(n, len(sims) - (exclude is not None)))
    return idx, sims[idx]


def nearest_many(embeddings: np.ndarray, queries: np.ndarray, n: int, chunk: int = 256):
    """:func:`nearest` for every row of ``queries`` (q, d) at once: (idx (q, n), sims (q, n))."""
    n = min(n, len(embeddings))
    idx = np.zeros((len(queries), n), dtype=np.int64)
    sims = np.zeros((len(queries), n), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        with single_threaded_blas():
            s = np.asarray(queries[start:start + chunk], dtype=np.float32) @ embeddings.T
        for i, row in enumerate(s, start):
            idx[i] = top_n(row, n)
            sims[i] = row[idx[i]]
    return idx, sims


class KnnRouter:
    name = "knn"
    needs_embedding = True

    def __init__(self, experts: Sequence[str], embeddings: np.ndarray, correct: np.ndarray,
                 answers: np.ndarray, gold: np.ndarray, encoder: str | None = None,
                 categories: dict | None = None, **params):
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown knn option(s): {', '.join(sorted(unknown))}", param="router")
        self.experts = tuple(experts)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        self.correct = np.asarray(correct, dtype=np.float32)
        self.answers = np.asarray(answers, dtype=np.int16)
        self.gold = np.asarray(gold, dtype=np.int16)
        self.encoder = encoder
        self.params = {**DEFAULTS, **params}
        valid = ~np.isnan(self.correct)
        self.prior = np.where(valid, self.correct, 0).sum(0) / np.maximum(valid.sum(0), 1)
        self._team_prior: dict[tuple[int, ...], float] = {}
        self.categories = {k: np.asarray(v) for k, v in (categories or {}).items()}
        if self.params["prior"] not in ("global", "category"):
            raise ConfigError("knn option prior must be 'global' or 'category'", param="router")
        if self.params["prior"] == "category" and set(self.categories) != set(CATEGORY_ARRAYS):
            raise ConfigError("knn prior 'category' needs a category classifier: train with "
                              "category labels", param="router")

    # ---- state -------------------------------------------------------------
    def save(self, folder, meta=None):
        arrays = {"experts": np.array(self.experts), "embeddings": self.embeddings,
                  "correct": self.correct, "answers": self.answers, "gold": self.gold, **self.categories}
        return save_state(folder, self.name, arrays, {"params": self.params, "encoder": self.encoder,
                                                      **(meta or {})})

    @classmethod
    def from_state(cls, state: str | None = None, generalist: str | None = None,
                   **overrides) -> "KnnRouter":
        """Load trained state; ``generalist`` is accepted (uniform factory) and unused."""
        a, meta, _ = load_state(state, cls.name)
        categories = {k: a[k] for k in CATEGORY_ARRAYS if k in a}
        return cls([str(e) for e in a["experts"]], a["embeddings"], a["correct"], a["answers"],
                   a["gold"], meta.get("encoder"), categories, **{**meta.get("params", {}), **overrides})

    # ---- scoring -------------------------------------------------------------
    def category_prior(self, embedding: np.ndarray) -> tuple[np.ndarray, str, float]:
        """(expected accuracy per expert, most likely category, its probability)."""
        c = self.categories
        z = c["cat_weights"] @ embedding + c["cat_bias"]
        p = np.exp(z - z.max())
        p /= p.sum()
        top = int(np.argmax(p))
        return p @ c["cat_accuracy"], str(c["cat_names"][top]), float(p[top])

    def scores(self, embedding: np.ndarray, cols: Sequence[int], neighbours=None, prior=None):
        p = self.params
        idx, sims = neighbours or nearest(self.embeddings, embedding, int(p["n_neighbors"]))
        if prior is None:
            prior = self.category_prior(embedding)[0] if p["prior"] == "category" else self.prior
        score, w = neighbour_scores(sims, self.correct[idx][:, cols], prior[cols],
                                    float(p["tau"]), float(p["alpha"]))
        return score, idx, sims, w, prior

    def team_prior(self, team: tuple[int, ...]) -> float:
        if team not in self._team_prior:
            self._team_prior[team] = float(vote_correct(self.answers[:, list(team)], self.gold).mean())
        return self._team_prior[team]

    def best_team(self, score, cols, idx, w, k: int) -> list[int]:
        """Positions (into cols) of the k-team with the best shrunk local vote accuracy."""
        pool = [int(i) for i in np.argsort(-score, kind="stable")[: max(k, int(self.params["team_pool"]))]]
        teams = list(combinations(pool, k))                         # each team keeps score order
        members = np.array([[cols[i] for i in t] for t in teams])   # (T, k) matrix columns
        local = vote_correct(self.answers[idx][:, members].transpose(1, 0, 2), self.gold[idx])
        alpha = float(self.params["alpha"])
        prior = np.array([self.team_prior(tuple(m)) for m in members])
        value = (local @ w + alpha * prior) / (w.sum() + alpha)
        return list(teams[int(np.argmax(value))])

    # ---- routing -------------------------------------------------------------
    def route(self, request: RouteRequest, candidates: Sequence[Expert], k: int = 1, neighbours=None) -> Decision:
        names = trained_candidates("knn", request, candidates, self.experts)
        cols = [self.experts.index(n) for n in names]
        emb = np.asarray(request.embedding, dtype=np.float32)
        prior, topic = self.prior, ""
        if self.params["prior"] == "category":
            prior, cat, conf = self.category_prior(emb)
            topic = f"; prior: accuracy on the likely category {cat} (p={conf:.2f})"
        score, idx, sims, w, prior = self.scores(emb, cols, neighbours, prior)
        k = max(1, min(k, len(names)))
        order = [int(i) for i in np.argsort(-score, kind="stable")]
        if k > 1:
            team = self.best_team(score, cols, idx, w, k)
            order = team + [i for i in order if i not in team]
        shown = order[:max(k, 5)]              # Decision.to_dict shows this many
        why = self._why([cols[i] for i in shown], idx, w, prior)
        choices = [Choice(names[i], float(score[i]), why[r] if r < len(shown) else {}) for r, i in enumerate(order)]
        choices += [Choice(c.name, 0.0, {"trained": False}) for c in candidates if c.name not in self.experts]
        return Decision(tuple(choices), k, self.name, self._reason(choices[:k], sims, k) + topic)

    def route_many(self, requests: Sequence[RouteRequest], candidates: Sequence[Expert],
                   k: int = 1) -> list[Decision]:
        """One decision per request, the neighbours of all of them found at once (batches); each
        request is checked by :meth:`route` (a missing embedding fails here, at the stack)."""
        if not requests:
            return []
        for r in requests:
            if r.embedding is None:
                trained_candidates("knn", r, candidates, self.experts)     # raises the clear error
        idx, sims = nearest_many(self.embeddings, np.stack([np.asarray(r.embedding, dtype=np.float32)
                                                            for r in requests]), int(self.params["n_neighbors"]))
        return [self.route(r, candidates, k, (idx[i], sims[i])) for i, r in enumerate(requests)]

    def _why(self, cols: list[int], idx, w, prior) -> list[dict]:
        """The evidence for each of ``cols``: its record on the neighbours, its global accuracy."""
        c = self.correct[idx][:, cols]                         # (neighbours, len(cols))
        ok = ~np.isnan(c)
        right = np.where(ok, c, 0.0)
        acc = (w[:, None] * right).sum(axis=0) / np.maximum((w[:, None] * ok).sum(axis=0), 1e-9)
        return [{"neighbour_accuracy": round(float(acc[j]), 3), "neighbours_right": int(right[:, j].sum()),
                 "neighbours": int(ok[:, j].sum()), "global_accuracy": round(float(self.prior[col]), 3),
                 "prior": round(float(prior[col]), 3)} for j, col in enumerate(cols)]

    def _reason(self, chosen: list[Choice], sims, k: int) -> str:
        picks = ", ".join(f"{c.expert} ({c.why['neighbours_right']}/{c.why['neighbours']} neighbours "
                          f"right, global {c.why['global_accuracy']:.2f})" for c in chosen)
        team = " as the team whose vote was right most often there" if k > 1 else ""
        return (f"{len(sims)} nearest recorded questions (cosine {sims.min():.2f}-{sims.max():.2f}): "
                f"{picks}{team}")
