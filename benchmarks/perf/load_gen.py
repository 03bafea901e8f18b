"""The load benchmark's load generator and measuring tools: closed-loop and open-loop (Poisson)
traffic over one aiohttp session, latency percentiles, per-process CPU seconds and RSS from /proc.

Latency in the open loop is measured from each request's scheduled arrival, not from when the
generator got round to sending it, so a late generator shows up as latency (and in ``lag_max``)
instead of silently lowering the offered rate.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Target:
    """Where requests go: URL, the JSON body (bytes) and headers (the API key, if any)."""
    name: str
    url: str
    body: bytes
    headers: dict = field(default_factory=dict)


@dataclass
class Result:
    latencies: list[float]          # seconds, successful requests only
    errors: int
    wall: float
    lag_max: float = 0.0            # open loop: how late the generator sent its latest request
    error_kinds: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.latencies) + self.errors

    def pct(self, q: float) -> float:
        """The q-th percentile latency in ms (nan when nothing succeeded)."""
        return percentile(self.latencies, q) * 1000

    @classmethod
    def merged(cls, parts: list["Result"]) -> "Result":
        """One result from several runs of the same traffic (interleaved rounds)."""
        kinds: dict = {}
        for r in parts:
            for kind, n in r.error_kinds.items():
                kinds[kind] = kinds.get(kind, 0) + n
        return cls([x for r in parts for x in r.latencies], sum(r.errors for r in parts),
                   sum(r.wall for r in parts), max((r.lag_max for r in parts), default=0.0), kinds)

    def summary(self) -> dict:
        return {"requests": self.count, "errors": self.errors, "wall_s": round(self.wall, 3),
                "rate": round(self.count / self.wall, 1) if self.wall else 0.0,
                "p50_ms": round(self.pct(50), 3), "p99_ms": round(self.pct(99), 3),
                "lag_max_ms": round(self.lag_max * 1000, 2), "error_kinds": self.error_kinds}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def session(timeout: float = 30.0):
    import aiohttp

    # at most 2,048 connections: past that, requests wait for one (and the wait counts as latency)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2048, keepalive_timeout=60),
                                 timeout=aiohttp.ClientTimeout(total=timeout), skip_auto_headers=("User-Agent",))


async def _one(http, target: Target, start: float, result: Result) -> None:
    try:
        async with http.post(target.url, data=target.body,
                             headers={"content-type": "application/json", **target.headers}) as resp:
            await resp.read()
            ok = resp.status == 200
            kind = str(resp.status)
    except Exception as exc:  # counted, never raised: one failure must not end the run
        ok, kind = False, type(exc).__name__
    if ok:
        result.latencies.append(time.perf_counter() - start)
    else:
        result.errors += 1
        result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1


async def closed_loop(http, target: Target, concurrency: int, seconds: float) -> Result:
    """``concurrency`` clients, each sending its next request when the last one answered."""
    result = Result([], 0, 0.0)
    t0 = time.perf_counter()
    end = t0 + seconds

    async def client():
        while time.perf_counter() < end:
            await _one(http, target, time.perf_counter(), result)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.wall = time.perf_counter() - t0
    return result


async def open_loop(http, target: Target, rate: float, seconds: float, seed: int = 0) -> Result:
    """Poisson arrivals at ``rate`` per second for ``seconds``, whatever the answers take."""
    rng = random.Random(seed)
    result = Result([], 0, 0.0)
    tasks = []
    t0 = time.perf_counter()
    due = t0
    while True:
        due += rng.expovariate(rate)
        if due - t0 > seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        else:
            result.lag_max = max(result.lag_max, -delay)
        tasks.append(asyncio.ensure_future(_one(http, target, due, result)))
    await asyncio.gather(*tasks)
    result.wall = seconds
    return result


# --- processes: CPU seconds and memory from /proc ------------------------------------------------

def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of one process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants still alive."""
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents[int(entry)], cpu[int(entry)] = st
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += [c for c, parent in parents.items() if parent == p]
    return total


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, MB."""
    total, todo = 0.0, [pid]
    children = _children()
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            pass
        todo += children.get(p, [])
    return total


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                out.setdefault(st[0], []).append(int(entry))
    return out


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    return 60 * sum((t - mt) * (v - mv) for t, v in samples) / den if den else 0.0
