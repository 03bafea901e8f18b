"""Train, validate, save and load routers: the functions behind ``conclave router train``
and ``conclave profile build --replay``.

    meta = train_router("knn", outcomes, "state/knn", fit_on={"questions": "..."})
    router = load_router("knn", "state/knn")

Training holds out a seeded-hash fifth of the questions, reports accuracy on it
for each k (majority vote of the recorded answers for k > 1), then refits on
all of the data and saves the state with that report in ``meta.json``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from experts_registry.errors import ConfigError, InvalidRequest

from .encoder import Encoder, cached_encode
from .evaluation import replay_experts, route_all, score_decisions
from .fit import fit_coe, fit_knn, fit_skills
from .outcomes import Outcomes
from .profiles import Profile, build_profile

TRAINABLE = ("skills", "coe", "knn", "correct")


def _fit(name: str, outcomes: Outcomes, encoder: Encoder | None, options: Mapping):
    if name == "skills":
        return fit_skills(outcomes, encoder, **options)
    enc = getattr(encoder, "name", None)
    if name == "coe":
        return fit_coe(outcomes, encoder=enc, **options)
    if name == "knn":
        return fit_knn(outcomes, encoder=enc, **options)
    if name == "correct":
        from .correct_fit import fit_correct

        return fit_correct(outcomes, encoder=enc, **options)
    raise InvalidRequest(f"router {name!r} cannot be trained: choose one of {', '.join(TRAINABLE)}",
                         param="router")


def holdout_mask(outcomes: Outcomes, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    ids = outcomes.question_ids or tuple(range(len(outcomes)))
    h = [int.from_bytes(hashlib.sha256(f"{seed}:{q}".encode()).digest()[:8], "big") for q in ids]
    return np.array(h, dtype=np.float64) / 2.0**64 < fraction


def validate(router, outcomes: Outcomes, ks: Sequence[int] = (1, 3)) -> dict:
    """Replay accuracy of a fitted router on outcomes it was not fitted on."""
    answers, gold = outcomes.letters()
    candidates = replay_experts(outcomes.experts, outcomes.active_params)
    metadata = [{k: v[i] for k, v in outcomes.labels.items() if v[i]} for i in range(len(outcomes))]
    out = {}
    for k in ks:
        if k <= len(outcomes.experts):
            decisions = route_all(router, outcomes.texts, outcomes.embeddings, metadata, candidates, k)
            out[f"k{k}"] = score_decisions(decisions, outcomes.experts, answers, gold, k, outcomes.active_params)
    if hasattr(router, "stopping"):            # routers that predict correctness: adaptive k, calibration
        from .correct import AUTO
        from .correct_fit import calibration

        decisions = route_all(router, outcomes.texts, outcomes.embeddings, metadata, candidates, AUTO)
        out["kauto"] = score_decisions(decisions, outcomes.experts, answers, gold, AUTO, outcomes.active_params)
        p = router.probabilities_many(np.asarray(outcomes.embeddings, dtype=np.float32))[0]
        out["calibration"] = calibration(p, outcomes.restrict(list(router.experts)).correct)
    return out


def train_router(name: str, outcomes: Outcomes, out_dir: str | Path, *, encoder: Encoder | None = None,
                 fit_on: Mapping | None = None, ks: Sequence[int] = (1, 3), holdout: float = 0.2,
                 seed: int = 0, **options) -> dict:
    """Fit ``name`` on outcomes (validated on a held-out part), save it to ``out_dir``; return meta."""
    if name not in TRAINABLE:
        raise InvalidRequest(f"router {name!r} cannot be trained: choose one of {', '.join(TRAINABLE)}",
                             param="router")
    if not outcomes.texts or any(not t.strip() for t in outcomes.texts):
        raise InvalidRequest("every question needs its text to train a router")
    mask = holdout_mask(outcomes, holdout, seed)
    validation = {}
    if 0 < mask.sum() < len(outcomes):
        inner = _fit(name, outcomes.subset(~mask), encoder, options)
        validation = {"n": int(mask.sum()), **validate(inner, outcomes.subset(mask), ks)}
    t0 = time.perf_counter()
    router = _fit(name, outcomes, encoder, options)
    meta = {"fit_on": dict(fit_on or {}), "n_questions": len(outcomes), "experts": list(outcomes.experts),
            "labels": sorted(outcomes.labels), "validation": validation,
            "fit_seconds": round(time.perf_counter() - t0, 2),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    router.save(out_dir, meta)
    return meta


def load_router(name: str, state: str | Path | None = None, **options):
    """A router from the registry; fitted routers need ``state`` (a trained folder)."""
    from . import ROUTERS

    if name not in ROUTERS:
        raise ConfigError(f"unknown router {name!r}: choose one of {', '.join(sorted(ROUTERS))}",
                          param="router")
    if name in TRAINABLE:
        return ROUTERS[name](state=str(state) if state else None, **options)
    return ROUTERS[name](**options)


def replay_outcomes(questions, predictions, models, pool: str | None, encoder: Encoder | None = None,
                    cache_dir=None) -> Outcomes:
    """Outcomes (with embeddings when an encoder is given) from replay files."""
    from .replay_data import load_models, load_replay

    data = load_replay(questions, predictions, load_models(models), pool)
    emb = cached_encode(encoder, data.texts, cache_dir) if encoder is not None else None
    return data.outcomes(emb)


def profile_from_replay(questions, predictions, models, pool: str | None, out_dir: str | Path,
                        encoder: Encoder | None = None, cache_dir=None,
                        experts: Sequence[str] | None = None) -> Profile:
    """``conclave profile build --replay``: skills profiles from recorded outcomes, saved to out_dir.

    ``experts`` restricts the profile to those (e.g. the registered experts).
    """
    outcomes = replay_outcomes(questions, predictions, models, pool, encoder, cache_dir)
    if experts:
        outcomes = outcomes.restrict(list(experts))
    profile = build_profile(outcomes, encoder=encoder)
    profile.save(out_dir, {"fit_on": {"questions": str(questions), "predictions": str(predictions),
                                      "models": str(models), "pool": pool},
                           "n_questions": len(outcomes), "options": {}})
    return profile
