"""A discrete-event simulator of the cluster protocol: each simulated worker runs the SAME decision
code as ``conclave worker`` with the information a real worker has.

- ``affinity``: every worker owns an ``AffinityPolicy`` and, when idle, reads a ``ClusterView``
  (per-expert queues and the placement table, exactly what ``placement.VIEW`` returns from Redis),
  tries its choices in order and claims a load by the same rule as ``placement.CLAIM`` (fewer live
  holders than allowed).  Its gen/load estimates are its own measured means, as in the real loop.
- ``shared``: today's first version: every worker owns a ``BatchPolicy`` and, when idle, reads up to
  50 of the oldest unread jobs of the one shared stream into it (``XREADGROUP COUNT 50``), then asks
  its own policy; no worker knows what the others loaded.

What is not modelled: Redis round trips and the worker's 20 ms poll (a worker with nothing to do
looks again after ``max_wait / 1000`` seconds, at least 10 ms), reclaim after a crash, process
start-up.  One model per worker (the cost model's), loads as in ``sched_sim.Cost``.
"""

from __future__ import annotations

import heapq
from collections import deque

from service.scheduler.affinity import AffinityPolicy, ClusterView, Queue
from service.scheduler.policy import BatchPolicy, Pending

from .sched_sim import Cost, Result, WorkerTiers

FETCH = 50   # the shared loop's XREADGROUP count


class _W:
    def __init__(self, i: int):
        self.name, self.loaded, self.seen = f"w{i}", [], WorkerTiers()
        self.busy_until, self.gen, self.jobs, self.load_sum, self.loads = 0.0, 0.0, 0, 0.0, 0

    def means(self) -> tuple[float, float]:
        return (self.gen / self.jobs if self.jobs else 0.0), (self.load_sum / self.loads if self.loads else 0.0)


def simulate_cluster(mode: str, arrivals: list[tuple[float, str]], cost: Cost, workers: int, max_batch: int,
                     max_wait: float, replica_fraction: float = 0.5, label: str = "") -> Result:
    res = Result(label or mode, workers)
    ws = [_W(i) for i in range(workers)]
    step = max(0.01, max_wait / 1000)
    queues: dict[str, deque[Pending]] = {}
    arrived: dict[str, int] = {}
    last: dict[str, float] = {}
    loaded_at: dict[str, float] = {}   # placement's loaded_at: expert -> its last load, any worker
    fifo: deque[Pending] = deque()
    pols = ([AffinityPolicy(max_batch, max_wait, replica_fraction) for _ in ws] if mode == "affinity"
            else [BatchPolicy(max_batch, max_wait, max_wait) for _ in ws])
    events: list[tuple] = [(t, 0, i) for i, (t, _) in enumerate(arrivals)]
    heapq.heapify(events)
    wake = -1.0
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, kind, ref = heapq.heappop(events)
            if kind == 0:
                item = Pending(ref, arrivals[ref][1], now)
                if mode == "affinity":
                    queues.setdefault(item.expert, deque()).append(item)
                    arrived[item.expert] = arrived.get(item.expert, 0) + 1
                    last[item.expert] = now
                else:
                    fifo.append(item)
        for k, w in enumerate(ws):
            if w.busy_until > now:
                continue
            if mode == "affinity":
                started = _affinity_step(w, pols[k], ws, queues, arrived, last, loaded_at, now, cost, res,
                                         max_batch)
            else:
                started = _shared_step(w, pols[k], fifo, now, cost, res)
            if started:
                heapq.heappush(events, (w.busy_until, 1, -1))
        waiting = any(queues.values()) or fifo or any(p.pending() for p in pols if isinstance(p, BatchPolicy))
        if waiting and any(w.busy_until <= now for w in ws) and wake <= now:
            wake = now + step   # one pending wake-up at a time
            heapq.heappush(events, (wake, 2, -1))
    return res


def _serve(w: _W, expert: str, items: list[Pending], now: float, cost: Cost, res: Result,
           loaded_at: dict | None = None) -> None:
    took = 0.0
    if expert not in w.loaded:
        took += cost.unload_s * len(w.loaded)
        for old in w.loaded:
            w.seen.unload(old, cost)
        w.loaded[:] = [expert]
        load, tier = w.seen.load(expert, cost)
        res.tier_loads[tier] = res.tier_loads.get(tier, 0) + 1
        took += load
        w.load_sum += load
        w.loads += 1
        res.loads += 1
        res.load_times.setdefault(expert, []).append(now)
        if loaded_at is not None:
            loaded_at[expert] = now
    end = now + took
    for item in items:
        end += cost.gen_s
        res.latencies.append(end - item.at)
    w.gen += cost.gen_s * len(items)
    w.jobs += len(items)
    w.busy_until = end
    res.makespan = max(res.makespan, end)


def _affinity_step(w, pol, ws, queues, arrived, last, loaded_at, now, cost, res, max_batch) -> bool:
    holders = {}
    for other in ws:
        for e in other.loaded:
            holders.setdefault(e, {})[other.name] = "loaded"
    view = ClusterView(now, {e: Queue(len(q), q[0].at if q else now, last[e], arrived[e]) for e, q in queues.items()},
                       holders, {x.name: 1 for x in ws}, loaded_at)
    gen_s, load_s = w.means()
    switch = w.seen.switch_costs(cost) if cost.sleep1_s is not None else None   # a vLLM worker reports its tiers
    for choice in pol.decide(view, w.name, list(w.loaded), 1, gen_s, load_s, switch_s=switch):
        held_by = [n for n in holders.get(choice.expert, {}) if n != w.name]
        if choice.load and len(held_by) + 1 > (len(held_by) + 1 if choice.replica else 1):
            continue   # the claim would fail
        q = queues.get(choice.expert)
        if not q:
            continue
        items = [q.popleft() for _ in range(min(len(q), max_batch))]
        _serve(w, choice.expert, items, now, cost, res, view.loaded_at)
        return True
    return False


def _shared_step(w, pol: BatchPolicy, fifo: deque, now, cost, res) -> bool:
    for _ in range(min(FETCH, len(fifo))):
        pol.add(fifo.popleft())
    pick = pol.next(list(w.loaded), now)
    if pick is None:
        return False
    pol.done(pick.expert)
    _serve(w, pick.expert, list(pick.items), now, cost, res)
    return True


def loads_lower_bound(arrivals: list[tuple[float, str]], window: float, online: bool) -> int:
    """One load per expert (all at once), or per expert per ``window`` of time it has arrivals in."""
    if not online:
        return len({e for _, e in arrivals})
    return len({(e, int(t // window)) for t, e in arrivals})
