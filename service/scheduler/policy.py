"""Which expert a worker serves next, and with which requests.  Pure: no I/O, no clock reads
(the caller passes ``now``), so the real scheduler and the simulator drive the same code.

``BatchPolicy.next(loaded, now)`` decides, in this order:

1. **Wait bound.**  If a request has waited ``max_wait`` seconds or more, the expert of the
   oldest such request goes next (loaded or not; ties prefer a loaded expert).  This is the
   no-starvation rule: a request past the bound goes before every request that is not, so it
   waits ``max_wait`` plus the batch in progress, one switch, and the batches of requests that
   crossed the bound before it (none when the load leaves room to visit every expert once per
   ``max_wait``).  One exception, once per overdue request: when the worker's loaded expert has a
   full batch (``max_batch``) waiting, that batch runs first.  Leaving a full queue behind would
   only load that expert again within the same window; the overdue request waits one more batch.
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

**Reload gap** (``reload_gap`` seconds, 0 = off): an expert loaded less than ``reload_gap``
ago and since unloaded from this worker is not loaded again by rule 3; its requests wait until
the gap has passed (or they become overdue), so with ``reload_gap = max_wait`` an expert is loaded
at most once per batch window even at light load, at the price of that wait.  ``wake_at(now)``
tells an idle worker when a held expert becomes eligible.

**Admission** (``admit``): a request is refused (429 with Retry-After) when the work already
queued ahead of it, spread over the workers, exceeds ``ADMIT_HEADROOM * max_wait``: past the
capacity no policy can keep the wait bound, and a clear refusal beats an unbounded wait.  The
headroom (0.8) leaves room for the batch in flight and the policy's reordering: in the
simulator, 1.0 let p99 reach 1.1x the bound at 90% utilisation, 0.8 kept it under.  The per-request and
per-load seconds are the caller's estimates (the real scheduler's measured means, the
simulator's cost model); without estimates everything is admitted.

The chosen expert's oldest requests, up to ``max_batch``, form the batch.  With several workers
an expert being served by one worker (``claim``) is not loaded by another; a worker that already
has it loaded may serve it too.  ``FcfsPolicy`` is the baseline: strictly arrival order, one
request at a time, loading whatever the next request needs.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass


ADMIT_HEADROOM = 0.8


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
    reason: str  # "overdue", "full-batch", "loaded", "score", "fcfs"


class BatchPolicy:
    def __init__(self, max_batch: int = 8, max_wait: float = 10.0, reload_gap: float = 0.0):
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait
        self.reload_gap = reload_gap
        self.last_load: dict[str, float] = {}
        self.deferred: set[int] = set()     # overdue requests already passed over once for a full batch
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

    def admit(self, expert: str, now: float, loaded: set[str], gen_s: float | None, load_s: float | None,
              workers: int = 1) -> float | None:
        """None to queue a new request for ``expert``; else the seconds after which to retry.
        ``loaded``: experts loaded on any worker; ``gen_s``/``load_s``: estimated seconds per
        request and per model load."""
        if not gen_s:
            return None
        waiting = {e for e, q in self.queues.items() if q} | {expert}
        switches = sum(1 for e in waiting if e not in loaded)
        backlog = ((self.pending() + 1) * gen_s + switches * (load_s or 0.0)) / max(1, workers)
        limit = ADMIT_HEADROOM * self.max_wait
        return None if backlog <= limit else backlog - limit

    def held(self, expert: str, now: float) -> bool:
        """Inside its reload gap (only meaningful for an expert not loaded on the asking worker)."""
        return self.reload_gap > 0 and now < self.last_load.get(expert, float("-inf")) + self.reload_gap

    def wake_at(self, now: float) -> float | None:
        """When the earliest held expert with pending requests becomes eligible (None: none held)."""
        times = [min(self.last_load[e] + self.reload_gap, q[0].at + self.max_wait)
                 for e, q in self.queues.items() if q and self.held(e, now)]
        return min(times) if times else None

    # -- the decision ------------------------------------------------------
    def score(self, expert: str, now: float) -> float:
        q = self.queues[expert]
        return min(len(q), self.max_batch) / self.max_batch + (now - q[0].at) / self.max_wait

    def next(self, loaded: list[str], now: float, worker: int = 0,
             switch_s: dict[str, float] | None = None) -> Pick | None:
        """``switch_s``: the worker's seconds to serve an expert from the tier it is in (vLLM sleep tiers;
        an expert it does not list costs as much as the dearest it does): a switch prefers, among
        equally pressing experts, the cheaper one (its score less its switch cost over ``max_wait``)."""
        self.homes[worker] = tuple(loaded)
        ready = [e for e, q in self.queues.items() if q and (e in loaded or not self.claims[e])]
        if not ready:
            return None
        overdue = [e for e in ready if now - self.queues[e][0].at >= self.max_wait]
        if overdue:
            expert = min(overdue, key=lambda e: (self.queues[e][0].at, e not in loaded, self.queues[e][0].id))
            full = [e for e in ready if e in loaded and e != expert and self.pending(e) >= self.max_batch]
            head = self.queues[expert][0]
            if full and head.id not in self.deferred:
                self.deferred.add(head.id)
                return self._take(full[0], loaded, "full-batch")
            return self._take(expert, loaded, "overdue", now=now)
        here = [e for e in ready if e in loaded]
        if here:
            return self._take(max(here, key=lambda e: self.score(e, now)), loaded, "loaded")
        ready = [e for e in ready if not self.held(e, now)]
        if not ready:
            return None
        elsewhere = {e for w, homes in self.homes.items() if w != worker for e in homes}
        costs = switch_s or {}
        dearest = max(costs.values(), default=0.0)
        best = max(ready, key=lambda e: (e not in elsewhere,
                                         self.score(e, now) - costs.get(e, dearest) / self.max_wait,
                                         self.pending(e), -self.queues[e][0].at))
        return self._take(best, loaded, "score", now=now)

    def _take(self, expert: str, loaded: list[str], reason: str, limit: int | None = None,
              now: float | None = None) -> Pick:
        if expert not in loaded and now is not None:
            self.last_load[expert] = now
        q = self.queues[expert]
        items = tuple(q.popleft() for _ in range(min(len(q), limit or self.max_batch)))
        self.deferred.difference_update(i.id for i in items)
        if not q:
            del self.queues[expert]
        self.claims[expert] += 1
        return Pick(expert, items, expert not in loaded, reason)


class FcfsPolicy(BatchPolicy):
    """First come, first served, one request per pick: per-request model switching."""

    def next(self, loaded: list[str], now: float, worker: int = 0,
             switch_s: dict[str, float] | None = None) -> Pick | None:
        heads = [q[0] for q in self.queues.values() if q]
        if not heads:
            return None
        first = min(heads, key=lambda p: (p.at, p.id))
        return self._take(first.expert, loaded, "fcfs", limit=1, now=now)


def group_by_expert(items: list[Pending]) -> list[tuple[str, list[Pending]]]:
    """Symbolic-MoE's offline schedule: every request of an expert together, experts in order of
    first appearance, each loaded once."""
    groups: dict[str, list[Pending]] = {}
    for item in items:
        groups.setdefault(item.expert, []).append(item)
    return list(groups.items())


POLICIES = {"batch": BatchPolicy, "fcfs": FcfsPolicy}


def policy_from(settings, name: str = "batch") -> BatchPolicy:
    """The policy the settings describe (CONCLAVE_SCHED_MAX_BATCH / _MAX_WAIT / _RELOAD_GAP)."""
    gap = settings.sched_max_wait if settings.sched_reload_gap is None else settings.sched_reload_gap
    return POLICIES[name](settings.sched_max_batch, settings.sched_max_wait, gap)
