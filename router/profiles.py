"""Symbolic-MoE model profiles: per expert, per skill, +1 per right and -1 per wrong answer.

Skills of a validation question come from dataset labels (:func:`label_skills`:
MMLU-Pro ``category`` and ``src``, an MMLU ``subject``) or from keywords an LLM
extracted (passed in as lists).  Besides the counts, a profile keeps two
vectors per skill when an encoder was at hand: the embedding of the skill's
name (to map a request's keywords to their nearest profile skill, as in the
paper) and the centroid of its questions' embeddings (the fast path: the
request embedding's nearest skills, no keyword model on the live path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from experts_registry.errors import ValidationFailed

from .encoder import Encoder, normalise
from .outcomes import Outcomes
from .state import load_state, save_state

LABEL_KEYS = ("category", "src", "subject")
_SRC_PREFIX = re.compile(r"^(ori_mmlu|stemez|theoremqa|scibench)[-_]", re.I)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def skill_name(text: str) -> str:
    """Normalise a label or keyword: 'stemez-PhysicalChemistry' -> 'physical chemistry'."""
    text = _SRC_PREFIX.sub("", text.strip())
    text = _CAMEL.sub(" ", text).replace("_", " ").replace("-", " ")
    return " ".join(text.lower().split())


def label_skills(labels: Mapping[str, object]) -> list[str]:
    """The skills a question's dataset labels name, e.g. category and src."""
    found: list[str] = []
    for key in LABEL_KEYS:
        value = labels.get(key)
        if isinstance(value, str) and value.strip():
            name = skill_name(value)
            if name and name not in found:
                found.append(name)
    return found


@dataclass(frozen=True)
class Profile:
    experts: tuple[str, ...]
    skills: tuple[str, ...]
    counts: np.ndarray                 # (experts, skills) int: +1 right, -1 wrong
    name_vectors: np.ndarray | None    # (skills, d) embeddings of the skill names
    centroids: np.ndarray | None       # (skills, d) mean embedding of the skill's questions
    encoder: str | None = None

    def row(self, expert: str) -> dict[str, int]:
        i = self.experts.index(expert)
        return {s: int(c) for s, c in zip(self.skills, self.counts[i]) if c}

    def save(self, folder, meta: Mapping | None = None):
        arrays = {"experts": np.array(self.experts), "skills": np.array(self.skills),
                  "counts": self.counts}
        if self.name_vectors is not None:
            arrays["name_vectors"] = self.name_vectors
        if self.centroids is not None:
            arrays["centroids"] = self.centroids
        return save_state(folder, "skills", arrays, {"encoder": self.encoder, **(meta or {})})

    @classmethod
    def load(cls, folder) -> "Profile":
        arrays, meta, _ = load_state(folder, "skills")
        return cls(tuple(str(e) for e in arrays["experts"]), tuple(str(s) for s in arrays["skills"]),
                   arrays["counts"].astype(np.int64), arrays.get("name_vectors"),
                   arrays.get("centroids"), meta.get("encoder"))


def question_skills_from_labels(outcomes: Outcomes) -> list[list[str]]:
    n = len(outcomes)
    keys = [k for k in LABEL_KEYS if k in outcomes.labels]
    if not keys:
        raise ValidationFailed("no skill labels: give each question a category/src/subject label "
                               "or extracted keywords", param="labels")
    return [label_skills({k: outcomes.labels[k][i] for k in keys}) for i in range(n)]


def build_profile(outcomes: Outcomes, question_skills: Sequence[Sequence[str]] | None = None,
                  encoder: Encoder | None = None) -> Profile:
    """Count +1/-1 per expert per skill over the recorded outcomes (no record: no count)."""
    if question_skills is None:
        question_skills = question_skills_from_labels(outcomes)
    if len(question_skills) != len(outcomes):
        raise ValidationFailed("one skill list per question is needed", param="skills")
    skills = sorted({skill_name(s) for qs in question_skills for s in qs} - {""})
    if not skills:
        raise ValidationFailed("no skills found: cannot build a profile", param="skills")
    index = {s: j for j, s in enumerate(skills)}
    member = np.zeros((len(outcomes), len(skills)), dtype=np.float32)
    for i, qs in enumerate(question_skills):
        for s in {skill_name(s) for s in qs} - {""}:
            member[i, index[s]] = 1.0
    signed = np.nan_to_num(2.0 * outcomes.correct - 1.0, nan=0.0)      # +1 / -1 / 0
    counts = np.rint(signed.T @ member).astype(np.int64)
    name_vectors = centroids = None
    if encoder is not None:
        name_vectors = encoder.encode(skills)
    if outcomes.embeddings is not None:
        centroids = normalise(member.T @ outcomes.embeddings)
    return Profile(tuple(outcomes.experts), tuple(skills), counts, name_vectors, centroids,
                   getattr(encoder, "name", None))
