"""Majority vote over recorded answers, ties broken by rank.

Answers are small integers (0-9 for A-J); a negative value means no usable
answer (unparsable or no record) and casts no vote.  Voters are given best
first: among equally supported answers the best-ranked voter's answer wins.
"""

from __future__ import annotations

import numpy as np

LETTERS = "ABCDEFGHIJ"
NO_ANSWER = -1


def vote(answers: np.ndarray) -> np.ndarray:
    """Winning answer along the last axis (voters best first); NO_ANSWER when nobody answered.

    Works on any leading shape, e.g. (questions, k) or (subsets, neighbours, k).
    """
    a = np.asarray(answers)
    k = a.shape[-1]
    valid = a >= 0
    agree = (a[..., :, None] == a[..., None, :]) & valid[..., None, :]
    support = np.where(valid, agree.sum(axis=-1), -1)
    key = support * (k + 1) - np.arange(k)            # more support first, then better rank
    winner = np.argmax(key, axis=-1)
    chosen = np.take_along_axis(a, winner[..., None], axis=-1)[..., 0]
    return np.where(valid.any(axis=-1), chosen, NO_ANSWER)


def vote_correct(answers: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """1.0 where the vote equals the gold answer (broadcast over leading axes)."""
    chosen = vote(answers)
    return ((chosen == gold) & (chosen >= 0)).astype(np.float32)
