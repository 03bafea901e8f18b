"""The last N routing decisions, kept in memory for the dashboard (``/ui/routing``).

A bounded ring (``CONCLAVE_UI_DECISIONS`` entries, oldest dropped first). Prompt text is kept only when
the operator asked for it (``CONCLAVE_UI_SHOW_PROMPTS``); otherwise an entry holds the prompt's length
and a short keyed hash (HMAC-SHA-256 under a key made when the gateway starts), which tells repeated
prompts apart without keeping their text and cannot be matched against a list of guessed prompts from
outside this process. Pure: the caller passes the time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import deque
from typing import Any

from router import Decision

MAX_CANDIDATES = 32   # candidates kept per entry (a decision over more experts keeps its best 32)


class DecisionLog:
    def __init__(self, size: int = 200, show_prompts: bool = False, key: bytes | None = None):
        self.size = max(0, size)
        self.show_prompts = show_prompts
        self._key = key if key is not None else os.urandom(16)
        self._ring: deque[dict] = deque(maxlen=self.size or 1)
        self._lock = threading.Lock()
        self._seq = 0

    def prompt_view(self, text: str) -> dict[str, Any]:
        """What an entry says about the prompt: its length, its keyed hash, and its text only if allowed."""
        view: dict[str, Any] = {"chars": len(text),
                                "hash": hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:12]}
        if self.show_prompts:
            view["text"] = text
        return view

    def record(self, decision: Decision, text: str, model: str, now: float) -> dict | None:
        """Keep one decision (the oldest goes when the ring is full); None when the ring has size 0.
        Returns the entry's head (time, model, prompt, id): the decision itself is described when the
        dashboard reads it, not on the request's path."""
        if self.size == 0:
            return None
        head = {"at": now, "model": model, "prompt": self.prompt_view(text)}
        with self._lock:
            self._seq += 1
            head["id"] = self._seq
            self._ring.append((head, decision))
        return head

    def recent(self, limit: int | None = None) -> list[dict]:
        """The newest first, at most ``limit``."""
        with self._lock:
            items = list(self._ring)
        items.reverse()
        items = items[:limit] if limit is not None else items
        return [{**head, **describe(decision)} for head, decision in items]

    def __len__(self) -> int:
        return len(self._ring) if self.size else 0


def describe(decision: Decision) -> dict[str, Any]:
    """A decision with every candidate (up to MAX_CANDIDATES), its score, vote weight and evidence."""
    weights = list(decision.weights or ())
    candidates = []
    for i, c in enumerate(decision.choices[:MAX_CANDIDATES]):
        item = {"expert": c.expert, "score": round(float(c.score), 4), "chosen": i < decision.k,
                "evidence": _plain(dict(c.why))}
        if i < len(weights):
            item["weight"] = round(float(weights[i]), 4)
        candidates.append(item)
    out = {"router": decision.router, "k": decision.k, "experts": decision.experts,
           "reason": decision.reason, "candidates": candidates}
    if decision.stopping is not None:
        out["stopping"] = _plain(dict(decision.stopping))
    return out


def _plain(value: Any) -> Any:
    """JSON-safe: numpy numbers and arrays become floats and lists; tuples become lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, float):
        return round(value, 4)
    return value
