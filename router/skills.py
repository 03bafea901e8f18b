"""Skills router: Symbolic-MoE recruiting (Chen et al., 2025) over model profiles.

For a request with skills K (mapped to profile skills):

    S(m, q)  = sum_{k in K} profile[m][k]                       local suitability
    G(m)     = sum_k profile[m][k]; if min G < 0: G <- G - min G + 1
    gamma_m  = G^(1/T) / sum_m' G^(1/T),  T = 0.5                 global competency
    w_m      = S(m, q) * gamma_m  over experts with S > 0
               (no S > 0: S <- S - min S + 1 for all, then the same)

k experts are sampled without replacement in proportion to w (seeded by the
router seed and the request text, so ``route()`` stays a pure function), or
taken as the top-k by w (``sample=False``).  Experts with w = 0 (S <= 0; common
when most experts are below 50% on a skill) follow, ranked by the paper's
fallback (S - min S + 1) * gamma.

Where the request's skills come from, first match wins:
1. ``metadata["skills"]``: keywords already extracted (the LLM keyword seam);
   each maps to its nearest profile skill: exact name, else by cosine of
   ``metadata["skill_embeddings"]`` against the skill-name vectors.
2. dataset labels in metadata (``category``, ``src``, ``subject``) when
   ``use_labels``.
3. the request embedding's ``n_skills`` nearest skill centroids (fast path).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from experts_registry.errors import ConfigError, InvalidRequest
from experts_registry.model import Expert

from .base import Choice, Decision, RouteRequest
from .profiles import Profile, label_skills, skill_name
from .state import load_state


def global_competency(counts: np.ndarray, temperature: float = 0.5) -> np.ndarray:
    """gamma over experts from their profile rows (experts x skills)."""
    g = counts.sum(axis=1).astype(np.float64)
    if g.min() < 0:
        g = g - g.min() + 1.0
    powered = g ** (1.0 / temperature)
    total = powered.sum()
    return powered / total if total > 0 else np.full(len(g), 1.0 / len(g))


def recruit_weights(counts: np.ndarray, skill_idx: Sequence[int], temperature: float = 0.5):
    """(S, gamma, w) for one question whose skills are the columns ``skill_idx``."""
    local = counts[:, list(skill_idx)].sum(axis=1).astype(np.float64)
    gamma = global_competency(counts, temperature)
    if (local > 0).any():
        weight = np.where(local > 0, local * gamma, 0.0)
    else:
        weight = (local - local.min() + 1.0) * gamma
    return local, gamma, weight


def ranking(weight: np.ndarray, fallback: np.ndarray | None = None) -> list[int]:
    """Indices by weight, ties (e.g. the zero weights) by ``fallback``, then by index."""
    fallback = np.zeros_like(weight) if fallback is None else fallback
    return [int(i) for i in np.lexsort((np.arange(len(weight)), -fallback, -weight))]


def sample_experts(weight: np.ndarray, k: int, seed: int, fallback: np.ndarray | None = None) -> list[int]:
    """k indices drawn without replacement in proportion to weight, then the rest by ranking."""
    by_weight = ranking(weight, fallback)
    positive = [i for i in by_weight if weight[i] > 0]
    draws = min(k, len(positive))
    rng = np.random.default_rng(seed)
    p = weight[positive] / weight[positive].sum() if positive else None
    drawn = [positive[i] for i in rng.choice(len(positive), size=draws, replace=False, p=p)] if draws else []
    return drawn + [i for i in by_weight if i not in drawn]


def request_seed(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{text}".encode()).digest()[:8], "little")


class SkillsRouter:
    name = "skills"
    needs_embedding = True

    def __init__(self, profile: Profile, temperature: float = 0.5, sample: bool = True,
                 seed: int = 0, use_labels: bool = True, n_skills: int = 3):
        self.profile = profile
        self.temperature = temperature
        self.sample = sample
        self.seed = seed
        self.use_labels = use_labels
        self.n_skills = n_skills
        self._index = {s: j for j, s in enumerate(profile.skills)}

    @property
    def encoder(self) -> str | None:
        """Name of the encoder the profile's skill vectors came from (requests must use the same)."""
        return self.profile.encoder

    def options(self) -> dict:
        return {"temperature": self.temperature, "sample": self.sample, "seed": self.seed,
                "use_labels": self.use_labels, "n_skills": self.n_skills}

    def save(self, folder, meta=None):
        return self.profile.save(folder, {"options": self.options(), **(meta or {})})

    @classmethod
    def from_state(cls, state: str | None = None, generalist: str | None = None,
                   **overrides) -> "SkillsRouter":
        """Load a trained profile; ``generalist`` is accepted (uniform factory) and unused."""
        _, meta, _ = load_state(state, cls.name)
        return cls(Profile.load(state), **{**meta.get("options", {}), **overrides})

    def request_skills(self, request: RouteRequest) -> tuple[list[tuple[str, str, float]], str]:
        """[(asked, profile skill, similarity)] and where they came from."""
        meta = request.metadata or {}
        if meta.get("skills"):
            return self._map_keywords(list(meta["skills"]), meta.get("skill_embeddings")), "keywords"
        if self.use_labels:
            found = [(s, s, 1.0) for s in label_skills(meta) if s in self._index]
            if found:
                return found, "labels"
        if request.embedding is not None and self.profile.centroids is not None:
            sims = self.profile.centroids @ np.asarray(request.embedding, dtype=np.float32)
            top = np.argsort(-sims, kind="stable")[: self.n_skills]
            return [(self.profile.skills[j], self.profile.skills[j], float(sims[j])) for j in top], "embedding"
        raise InvalidRequest("the skills router needs the request's skills: pass extracted keywords "
                             "in metadata['skills'], dataset labels, or the request embedding")

    def _map_keywords(self, keywords: list[str], vectors) -> list[tuple[str, str, float]]:
        out = []
        for i, word in enumerate(keywords):
            name = skill_name(word)
            if name in self._index:
                out.append((word, name, 1.0))
            elif vectors is not None and self.profile.name_vectors is not None:
                sims = self.profile.name_vectors @ np.asarray(vectors[i], dtype=np.float32)
                j = int(np.argmax(sims))
                out.append((word, self.profile.skills[j], float(sims[j])))
        if not out:
            raise InvalidRequest(f"none of the skills {keywords} is in the profile, and no keyword "
                                 "embeddings were given to find the nearest profile skills")
        return out

    def route(self, request: RouteRequest, candidates: Sequence[Expert], k: int = 1) -> Decision:
        if not request.text or not request.text.strip():
            raise InvalidRequest("cannot route an empty prompt")
        names = [c.name for c in candidates]
        profiled = [n for n in names if n in self.profile.experts]
        if not profiled:
            raise ConfigError(f"the skills profile covers experts {', '.join(self.profile.experts)}, "
                              "none of which is a candidate: rebuild it with 'conclave profile build'",
                              param="router")
        matched, source = self.request_skills(request)
        rows = [self.profile.experts.index(n) for n in profiled]
        counts = self.profile.counts[rows]
        cols = [self._index[s] for _, s, _ in matched]
        local, gamma, weight = recruit_weights(counts, cols, self.temperature)
        seed = int((request.metadata or {}).get("seed", request_seed(self.seed, request.text)))
        fallback = (local - local.min() + 1.0) * gamma          # the paper's shift, for the rest
        order = sample_experts(weight, k, seed, fallback) if self.sample else ranking(weight, fallback)
        total = weight.sum() or 1.0
        choices = [Choice(profiled[i], float(weight[i] / total),
                          {"local": float(local[i]), "gamma": round(float(gamma[i]), 4),
                           "skills": {s: int(counts[i, self._index[s]]) for _, s, _ in matched}})
                   for i in order]
        choices += [Choice(n, 0.0, {"profiled": False}) for n in names if n not in profiled]
        k = max(1, min(k, len(choices)))
        return Decision(tuple(choices), k, self.name, self._reason(matched, source, choices[:k]))

    def _reason(self, matched, source, chosen) -> str:
        skills = ", ".join(f"{s} ({sim:.2f})" if source != "labels" else s for _, s, sim in matched)
        how = "sampled" if self.sample else "top"
        picks = ", ".join(f"{c.expert} (w={c.score:.2f})" for c in chosen)
        return (f"skills from {source}: {skills}; {how} {len(chosen)} by local suitability x "
                f"global competency (T={self.temperature}): {picks}")
