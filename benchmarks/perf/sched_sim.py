"""A discrete-event simulator of model-hosting workers, driving the SAME policy objects as the
real scheduler (``service.scheduler.policy``), plus Symbolic-MoE's offline grouping.

Cost model (all parameters): loading an expert takes ``cold_s`` the first time a worker loads it
and ``warm_s`` afterwards (page cache), unloading ``unload_s``; a batch runs its requests back to
back, ``gen_s`` each (llama.cpp-style; a GPU engine that batches for real would only make
bigger batches cheaper, which favours the batching scheduler further).
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


PROFILES = {
    "h100-8b": Cost(),
    "vllm-reload": Cost("vllm-reload", warm_s=48.0, cold_s=48.0, unload_s=5.5),
    "vllm-sleep": Cost("vllm-sleep", warm_s=3.0, cold_s=48.0, unload_s=0.3),
}


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
    seen: list[set[str]] = [set() for _ in range(workers)]
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
            pick = policy.next(loaded[w], now, worker=w)
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
        if policy.pending(old):
            left_behind.add(old)
    loaded[w][:] = [expert]
    took += cost.warm_s if expert in seen[w] else cost.cold_s
    seen[w].add(expert)
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
