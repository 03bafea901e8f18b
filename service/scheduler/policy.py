"""Which expert a worker serves next, and with which requests.  Pure: no I/O, no clock reads
(the caller passes ``now``), so the real scheduler and the simulator drive the same code.

``BatchPolicy.next(loaded, now)`` decides, in this order:

1. **Wait bound.**  If a request has waited ``max_wait`` seconds or more, the expert of the
   oldest such request goes next (loaded or not; ties prefer a loaded expert).  This is the
   no-starvation rule: a request past the bound goes before every request that is not, so it
   waits ``max_wait`` plus the batch in progress, one switch, and the batches of requests that
   crossed the bound before it (none when the load leaves room to visit every expert once per
   ``max_wait``).
2. **Loaded first.**  Otherwise, if an expert loaded on this worker has pending requests, serve
   it (the best-scoring one if several): no load cost at all.
3. **Switch by score.**  Otherwise load the expert with the highest score

       score(e) = min(n_e, max_batch) / max_batch  +  age_e / max_wait

   where ``n_e`` is its number of pending requests and ``age_e`` how long its oldest one has
   waited.  The first term is how much of a batch one load buys (pending work amortising the
   switch); the second is the fraction of the wait bound already used (urgency).  Both are in
   [0, 1] below the bound, so a full queue and an old lonely request weigh the same.  Ties
   go to the expert with more pending work (longest job first), and an expert that another
   worker has loaded is taken only if nothing else is waiting (no second copy while one exists).

The chosen expert's oldest requests, up to ``max_batch``, form the batch.  With several workers
an expert being served by one worker (``claim``) is not loaded by another; a worker that already
has it loaded may serve it too.  ``FcfsPolicy`` is the baseline: strictly arrival order, one
request at a time, loading whatever the next request needs.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Pending:
    id: int
    expert: str
    at: float  # when it was enqueued (the caller's clock)


@dataclass(frozen=True)
class Pick:
    expert: str
    items: tuple[Pending, ...]
    load: bool
    reason: str  # "overdue", "loaded", "score", "fcfs"


class BatchPolicy:
    def __init__(self, max_batch: int = 8, max_wait: float = 10.0):
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait
        self.queues: dict[str, deque[Pending]] = {}
        self.claims: Counter[str] = Counter()
        self.homes: dict[int, tuple[str, ...]] = {}   # what each worker had loaded at its last pick

    # -- queue bookkeeping -------------------------------------------------
    def add(self, item: Pending) -> None:
        self.queues.setdefault(item.expert, deque()).append(item)

    def remove(self, item: Pending) -> bool:
        """Drop a request that is still queued (its client left); False if it was already picked."""
        q = self.queues.get(item.expert)
        if q is None or item not in q:
            return False
        q.remove(item)
        return True

    def pending(self, expert: str | None = None) -> int:
        if expert is not None:
            return len(self.queues.get(expert, ()))
        return sum(len(q) for q in self.queues.values())

    def done(self, expert: str) -> None:
        """A worker finished the batch it picked for ``expert``."""
        self.claims[expert] -= 1
        if self.claims[expert] <= 0:
            del self.claims[expert]

    def eviction_order(self, loaded: list[str]) -> list[str]:
        """Which loaded experts to unload first: the ones with the least pending work."""
        return sorted(loaded, key=lambda e: (self.pending(e), loaded.index(e)))

    # -- the decision ------------------------------------------------------
    def score(self, expert: str, now: float) -> float:
        q = self.queues[expert]
        return min(len(q), self.max_batch) / self.max_batch + (now - q[0].at) / self.max_wait

    def next(self, loaded: list[str], now: float, worker: int = 0) -> Pick | None:
        self.homes[worker] = tuple(loaded)
        ready = [e for e, q in self.queues.items() if q and (e in loaded or not self.claims[e])]
        if not ready:
            return None
        overdue = [e for e in ready if now - self.queues[e][0].at >= self.max_wait]
        if overdue:
            expert = min(overdue, key=lambda e: (self.queues[e][0].at, e not in loaded, self.queues[e][0].id))
            return self._take(expert, loaded, "overdue")
        here = [e for e in ready if e in loaded]
        if here:
            return self._take(max(here, key=lambda e: self.score(e, now)), loaded, "loaded")
        elsewhere = {e for w, homes in self.homes.items() if w != worker for e in homes}
        best = max(ready, key=lambda e: (e not in elsewhere, self.score(e, now), self.pending(e),
                                         -self.queues[e][0].at))
        return self._take(best, loaded, "score")

    def _take(self, expert: str, loaded: list[str], reason: str, limit: int | None = None) -> Pick:
        q = self.queues[expert]
        items = tuple(q.popleft() for _ in range(min(len(q), limit or self.max_batch)))
        if not q:
            del self.queues[expert]
        self.claims[expert] += 1
        return Pick(expert, items, expert not in loaded, reason)


class FcfsPolicy(BatchPolicy):
    """First come, first served, one request per pick: per-request model switching."""

    def next(self, loaded: list[str], now: float, worker: int = 0) -> Pick | None:
        heads = [q[0] for q in self.queues.values() if q]
        if not heads:
            return None
        first = min(heads, key=lambda p: (p.at, p.id))
        return self._take(first.expert, loaded, "fcfs", limit=1)


def group_by_expert(items: list[Pending]) -> list[tuple[str, list[Pending]]]:
    """Symbolic-MoE's offline schedule: every request of an expert together, experts in order of
    first appearance, each loaded once."""
    groups: dict[str, list[Pending]] = {}
    for item in items:
        groups.setdefault(item.expert, []).append(item)
    return list(groups.items())


POLICIES = {"batch": BatchPolicy, "fcfs": FcfsPolicy}
