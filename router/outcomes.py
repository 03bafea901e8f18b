"""Recorded outcomes: what routers are fitted on.

One row per question, one column per expert: 1.0 if the expert answered the
question right, 0.0 if wrong (an unparsable answer is wrong), NaN if there is
no record.  Replay files, a live ``conclave profile build`` run and the tests
all produce an :class:`Outcomes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from experts_registry.errors import ValidationFailed


@dataclass(frozen=True)
class Outcomes:
    experts: tuple[str, ...]
    correct: np.ndarray                                   # (n, m) float32, NaN = no record
    texts: tuple[str, ...] = ()
    labels: Mapping[str, Sequence[str]] = field(default_factory=dict)  # e.g. {"category": [...]}
    embeddings: np.ndarray | None = None                  # (n, d), L2-normalised
    active_params: Mapping[str, float | None] = field(default_factory=dict)
    question_ids: tuple = ()
    answers: np.ndarray | None = None                     # (n, m) int: 0-9 letters, < 0 none
    gold: np.ndarray | None = None                        # (n,) int

    def __post_init__(self) -> None:
        correct = np.asarray(self.correct, dtype=np.float32)
        object.__setattr__(self, "correct", correct)
        n, m = correct.shape if correct.ndim == 2 else (-1, -1)
        if m != len(self.experts):
            raise ValidationFailed(f"outcomes: {len(self.experts)} experts but the matrix has "
                                   f"{m} columns", param="correct")
        if len(set(self.experts)) != len(self.experts):
            raise ValidationFailed("outcomes: expert names must be unique", param="experts")
        for what, seq in [("texts", self.texts), ("question_ids", self.question_ids),
                          *[(f"labels[{k}]", v) for k, v in self.labels.items()]]:
            if len(seq) not in (0, n):
                raise ValidationFailed(f"outcomes: {what} has {len(seq)} rows, expected {n}", param=what)
        for what, arr in [("answers", self.answers), ("gold", self.gold)]:
            if arr is not None and len(arr) != n:
                raise ValidationFailed(f"outcomes: {what} has {len(arr)} rows, expected {n}", param=what)
        if self.embeddings is not None and len(self.embeddings) != n:
            raise ValidationFailed(f"outcomes: {len(self.embeddings)} embeddings for {n} questions",
                                   param="embeddings")

    def __len__(self) -> int:
        return self.correct.shape[0]

    def subset(self, rows) -> "Outcomes":
        rows = np.asarray(rows)
        pick = (lambda seq: tuple(np.asarray(seq, dtype=object)[rows]) if len(seq) else ())
        return replace(self, correct=self.correct[rows], texts=pick(self.texts),
                       labels={k: list(pick(v)) for k, v in self.labels.items()},
                       embeddings=None if self.embeddings is None else self.embeddings[rows],
                       question_ids=pick(self.question_ids),
                       answers=None if self.answers is None else self.answers[rows],
                       gold=None if self.gold is None else self.gold[rows])

    def restrict(self, experts: Sequence[str]) -> "Outcomes":
        """Keep only these expert columns (in this order)."""
        missing = [e for e in experts if e not in self.experts]
        if missing:
            raise ValidationFailed(f"no recorded outcomes for expert(s) {', '.join(missing)}",
                                   param="experts")
        cols = [self.experts.index(e) for e in experts]
        return replace(self, experts=tuple(experts), correct=self.correct[:, cols],
                       answers=None if self.answers is None else self.answers[:, cols])

    def accuracy(self) -> np.ndarray:
        """Per-expert accuracy over the questions it has a record for (0 when none)."""
        return mean_or(self.correct, axis=0, default=0.0)

    def letters(self) -> tuple[np.ndarray, np.ndarray]:
        """(answers, gold) for votes; without recorded letters, right = 0 and every wrong
        answer is distinct (wrong experts never agree: a pessimistic stand-in)."""
        if self.answers is not None and self.gold is not None:
            return np.asarray(self.answers, dtype=np.int8), np.asarray(self.gold, dtype=np.int8)
        m = len(self.experts)
        wrong = np.broadcast_to(np.arange(1, m + 1, dtype=np.int16), self.correct.shape)
        answers = np.where(self.correct == 1, 0, np.where(np.isnan(self.correct), -1, wrong))
        return answers.astype(np.int16), np.zeros(len(self), dtype=np.int16)

    def require_embeddings(self, router: str) -> np.ndarray:
        if self.embeddings is None:
            raise ValidationFailed(f"router {router!r} is fitted on question embeddings: "
                                   "encode the questions first", param="embeddings")
        return self.embeddings


def mean_or(values: np.ndarray, axis: int, default: float) -> np.ndarray:
    """NaN-ignoring mean; ``default`` where a slice has no values."""
    valid = ~np.isnan(values)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), default).astype(np.float32)
