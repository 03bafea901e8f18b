"""What a scheduler did: loads, unloads, seconds loading vs generating, batch sizes and queue
waits per expert.  Thread-safe; ``snapshot()`` is what benchmarks print and /metrics exports."""

from __future__ import annotations

import threading
from collections import Counter, deque


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a sequence; 0.0 when empty."""
    data = sorted(values)
    if not data:
        return 0.0
    rank = max(1, -(-len(data) * q // 100))  # ceil(n * q / 100), at least 1
    return float(data[int(rank) - 1])


class SchedStats:
    def __init__(self, keep: int = 10_000):
        self._lock = threading.Lock()
        self.loads: Counter[str] = Counter()
        self.unloads = 0
        self.unloads_by: Counter[str] = Counter()
        self.seconds = {"load": 0.0, "unload": 0.0, "generate": 0.0}
        self.batch_sizes: Counter[int] = Counter()
        self.jobs = self.cancelled = self.rejected = 0
        self.waits: dict[str, deque[float]] = {}
        self._keep = keep

    def loaded(self, expert: str, seconds: float) -> None:
        with self._lock:
            self.loads[expert] += 1
            self.seconds["load"] += seconds

    def unloaded(self, count: int, seconds: float, names=()) -> None:
        with self._lock:
            self.unloads += count
            self.unloads_by.update(names)
            self.seconds["unload"] += seconds

    def generated(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_sizes[size] += 1
            self.jobs += size
            self.seconds["generate"] += seconds

    def waited(self, expert: str, seconds: float) -> None:
        with self._lock:
            self.waits.setdefault(expert, deque(maxlen=self._keep)).append(seconds)

    def count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def means(self) -> tuple[float | None, float]:
        """(seconds per generated job or None before the first batch, seconds per load), read together."""
        with self._lock:
            gen_s = self.seconds["generate"] / self.jobs if self.jobs else None
            loads = sum(self.loads.values())
            return gen_s, (self.seconds["load"] / loads if loads else 0.0)

    def per_job(self) -> float | None:
        """Seconds of loading and generating per job so far (None before the first batch)."""
        with self._lock:
            return (self.seconds["generate"] + self.seconds["load"]) / self.jobs if self.jobs else None

    def snapshot(self) -> dict:
        with self._lock:
            batches = sum(self.batch_sizes.values())
            every = [w for q in self.waits.values() for w in q]
            return {
                "loads": sum(self.loads.values()), "loads_by_expert": dict(self.loads), "unloads": self.unloads,
                "unloads_by_expert": dict(self.unloads_by),
                "load_seconds": round(self.seconds["load"], 4), "unload_seconds": round(self.seconds["unload"], 4),
                "generate_seconds": round(self.seconds["generate"], 4),
                "batches": batches, "jobs": self.jobs, "cancelled": self.cancelled, "rejected": self.rejected,
                "batch_size_mean": round(self.jobs / batches, 3) if batches else 0.0,
                "batch_sizes": dict(sorted(self.batch_sizes.items())),
                "wait": {"p50": percentile(every, 50), "p99": percentile(every, 99)},
                "wait_by_expert": {e: {"n": len(q), "p50": percentile(q, 50), "p99": percentile(q, 99)}
                                   for e, q in sorted(self.waits.items())},
            }
