"""What one worker of a cluster does next, from what it can read in Redis.  Pure: no I/O, no clock
reads (the view carries ``now``), so ``conclave worker`` and the simulator run the same code with
the same information (``ClusterView``: per-expert queues and the live placement table).

``AffinityPolicy.decide(view, me, loaded)`` returns the worker's choices, best first; the worker
tries them in order, and a choice that loads an expert only counts once the atomic claim in
Redis succeeds (``placement.Placement.claim``), so two workers never load one expert at once
unless a replica is wanted.  The rules, in order:

1. **Wait bound.**  An expert whose oldest request has waited ``max_wait`` or more goes first:
   served if this worker holds it, loaded if nobody holds it (oldest request first; held first).
2. **Held first.**  Otherwise an expert this worker holds with queued requests is served (the
   best-scoring one), at no load cost.
3. **Switch by score.**  Otherwise the worker may load an expert that nobody holds (or a *hot*
   one, below) with the highest ``score = min(n, max_batch) / max_batch + age / max_wait``, the
   same score as ``BatchPolicy``, less the expert's switch cost over ``max_wait`` (its tier's
   measured cost on this worker when given: an expert asleep in host memory costs less to serve
   than one on disk, so it goes first among equals).  With a free slot it loads at once.  With no free slot it evicts
   one of its idle experts only when that costs no reload later: the idle expert is *cold* (no
   arrival for ``cold_after`` seconds) or the candidate is *urgent* (its oldest request reaches
   ``urgent_at`` = max(max_wait / 2, 0.9 max_wait - load_s - (min(n, max_batch) + max_batch) gen_s):
   about the last moment to load and serve it, after one batch in progress, within the bound).  Holding a warm expert rather than swapping it out is what keeps loads near
   one per expert per batch window when several experts share few slots.
   **Reload gap** (``reload_gap``, default ``max_wait``, as ``BatchPolicy``): an expert loaded
   anywhere less than ``reload_gap`` ago and not held now is not loaded again by this rule until it
   is urgent, so an expert is loaded about once per batch window even at light load.
4. **Replicas.**  An expert held by ``h`` live workers is *hot* when
   ``pending * gen_s / h > replica_fraction * max_wait`` and ``pending > max_batch``: its holders
   cannot drain it within a fraction of the wait bound, so another worker may load a copy.

``cold_after`` adapts to each expert's arrival rate as this worker observed it: ten mean gaps
(a Poisson gap that long has probability e^-10, so a busy expert is not mistaken for a finished one
even over thousands of arrivals), at most ``max_wait / 4`` and at least 50 ms.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Queue:
    pending: int          # requests waiting (not being served by a live worker)
    oldest: float         # when the oldest of them arrived (view clock)
    last: float           # when the newest request for this expert arrived
    arrived: int = 0      # requests ever queued for this expert (for the arrival rate)


@dataclass(frozen=True)
class ClusterView:
    now: float
    queues: dict[str, Queue]
    holders: dict[str, dict[str, str]] = field(default_factory=dict)   # expert -> {live worker: loading|loaded}
    workers: dict[str, int] = field(default_factory=dict)              # live worker -> max models
    loaded_at: dict[str, float] = field(default_factory=dict)          # expert -> its last load (claim), any worker


@dataclass(frozen=True)
class Choice:
    expert: str
    load: bool
    replica: bool
    reason: str           # "overdue", "held", "score", "urgent", "cold", "replica"
    evict: tuple[str, ...] = ()


COLD_GAPS = 10.0   # an expert is cold after this many mean gaps without an arrival


class AffinityPolicy:
    def __init__(self, max_batch: int = 8, max_wait: float = 10.0, replica_fraction: float = 0.5,
                 reload_gap: float | None = None):
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait
        self.reload_gap = max_wait if reload_gap is None else reload_gap
        self.replica_fraction = replica_fraction
        self._seen: dict[str, deque[tuple[float, int]]] = {}   # expert -> (when, arrived) samples

    # -- what this worker has observed -------------------------------------
    def observe(self, view: ClusterView) -> None:
        for name, q in view.queues.items():
            samples = self._seen.get(name)
            if samples is None:   # the arrivals seen at first sight came since the last look (or a moment before)
                samples = self._seen[name] = deque([(view.now - 1.0, 0)])
            if samples[-1][1] != q.arrived:
                samples.append((view.now, q.arrived))
            while len(samples) > 2 and samples[1][0] < view.now - self.max_wait:
                samples.popleft()

    def rate(self, expert: str, now: float) -> float:
        """Arrivals per second of ``expert`` over this worker's recent samples (0 when unknown)."""
        samples = self._seen.get(expert)
        if not samples:
            return 0.0
        (t0, n0), (_, n1) = samples[0], samples[-1]
        return (n1 - n0) / max(now - t0, 1.0)

    def cold_after(self, expert: str, now: float) -> float:
        rate = self.rate(expert, now)
        cap = self.max_wait / 4
        return cap if rate <= 0 else min(cap, max(0.05, COLD_GAPS / rate))

    # -- the decision --------------------------------------------------------
    def score(self, q: Queue, now: float) -> float:
        return min(q.pending, self.max_batch) / self.max_batch + (now - q.oldest) / self.max_wait

    def hot(self, q: Queue, holders: int, gen_s: float) -> bool:
        return (holders > 0 and q.pending > self.max_batch
                and q.pending * gen_s / holders > self.replica_fraction * self.max_wait)

    def urgent_at(self, q: Queue, gen_s: float, load_s: float) -> float:
        """The age at which a queue must be loaded to be served within the bound (never before max_wait / 2)."""
        work = load_s + (min(q.pending, self.max_batch) + self.max_batch) * gen_s
        return max(0.5 * self.max_wait, 0.9 * self.max_wait - work)

    def decide(self, view: ClusterView, me: str, loaded: list[str], max_models: int = 1,
               gen_s: float = 0.0, load_s: float = 0.0, can_host=lambda expert: True,
               switch_s: dict[str, float] | None = None) -> list[Choice]:
        """This worker's choices, best first (an empty list: nothing to do now).  ``switch_s``: this worker's
        seconds to serve an expert from the tier it is in (vLLM sleep tiers); others cost ``load_s``."""
        self.observe(view)
        costs = switch_s or {}

        def cost(e: str) -> float:
            return costs.get(e, load_s)
        now, queues = view.now, {e: q for e, q in view.queues.items() if q.pending > 0}
        others = {e: {w for w in hs if w != me} for e, hs in view.holders.items()}
        mine = [e for e in loaded if e in queues]
        free = len(loaded) < max_models
        idle = [e for e in loaded if e not in queues]

        def open_(e: str) -> tuple[bool, bool]:   # (may load it, as a replica)
            if e in loaded or not can_host(e):
                return False, False
            held = len(others.get(e, ()))
            if not held:
                return True, False
            return (True, True) if self.hot(queues[e], held, gen_s) else (False, False)

        out: list[Choice] = []
        overdue = sorted((e for e in queues if now - queues[e].oldest >= self.max_wait),
                         key=lambda e: (queues[e].oldest, e not in loaded))
        for e in overdue:
            if e in loaded:
                out.append(Choice(e, False, False, "overdue"))
            elif open_(e)[0]:   # nobody holds it: whoever asks first loads it (no starvation)
                out.append(Choice(e, True, open_(e)[1], "overdue", self._victims(loaded, idle, free, now)))
        for e in sorted(mine, key=lambda e: -self.score(queues[e], now)):
            out.append(Choice(e, False, False, "held"))
        def urgent(e: str) -> bool:
            return now - queues[e].oldest >= self.urgent_at(queues[e], gen_s, cost(e))

        cands = [e for e in queues if open_(e)[0]
                 and (now - view.loaded_at.get(e, -1e18) >= self.reload_gap or urgent(e))]
        cands.sort(key=lambda e: (open_(e)[1], -self.score(queues[e], now) + cost(e) / self.max_wait,
                                  -queues[e].pending, queues[e].oldest))
        for e in cands:
            replica = open_(e)[1]
            if free:
                out.append(Choice(e, True, replica, "replica" if replica else "score"))
            elif idle and not mine:
                cold = [v for v in idle if now - view.queues.get(v, Queue(0, now, -1e18)).last
                        >= self.cold_after(v, now)]
                if urgent(e):
                    out.append(Choice(e, True, replica, "urgent", self._victims(loaded, idle, free, now)))
                elif cold:
                    out.append(Choice(e, True, replica, "replica" if replica else "cold",
                                      tuple(sorted(cold, key=lambda v: view.queues.get(v, Queue(0, 0, -1e18)).last))))
        seen, uniq = set(), []
        for c in out:
            if (c.expert, c.load) not in seen:
                seen.add((c.expert, c.load))
                uniq.append(c)
        return uniq

    def _victims(self, loaded: list[str], idle: list[str], free: bool, now: float) -> tuple[str, ...]:
        """Which experts to unload first for an overdue or urgent load: idle ones, then the rest."""
        if free:
            return ()
        return tuple(idle) + tuple(e for e in loaded if e not in idle)

    def wake_in(self, view: ClusterView, gen_s: float, load_s: float) -> float | None:
        """Seconds until a queued expert becomes urgent (None: nothing queued), for an idle worker's sleep."""
        left = [self.urgent_at(q, gen_s, load_s) - (view.now - q.oldest) for q in view.queues.values() if q.pending]
        return max(0.0, min(left)) if left else None
