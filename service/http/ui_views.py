"""What the dashboard's views show, as JSON: the experts with their health, the workers and their loads.

Fields not every record or worker has (an expert's active parameters, a worker's per-expert tier) are
read with ``getattr``/``get`` and left out when absent.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from experts_registry.model import CAPABILITIES, Expert

from ..core.backend import GenParams, collect
from ..pipeline.gateway import Gateway

PING_MESSAGES = [{"role": "user", "content": "Reply with one word: ready?"}]
PING_TOKENS = 8


def capabilities(expert: Expert) -> list[str]:
    """What the expert serves (declared, else its backend's default), in the registry's order."""
    return [c for c in CAPABILITIES if c in expert.supports]


def expert_row(gw: Gateway, e: Expert, now: float) -> dict[str, Any]:
    return {"name": e.name, "backend": e.backend, "served_by": gw.backends.kind_for(e), "model": e.model,
            "prompt_style": e.prompt_style, "skills": list(e.skills), "capabilities": capabilities(e),
            "capabilities_default": e.capabilities is None,
            "params_b": e.params_b, "active_params_b": getattr(e, "active_params_b", None),
            "price_per_mtok": e.price_per_mtok, "context_length": e.context_length, "memory_mb": e.memory_mb,
            "description": e.description, "breaker": gw.breakers.state(e.name, now)}


def experts_view(gw: Gateway) -> list[dict]:
    now = time.monotonic()
    return [expert_row(gw, e, now) for e in sorted(gw.store.list(), key=lambda e: e.name)]


async def ping(gw: Gateway, name: str) -> dict[str, Any]:
    """A tiny real request to one expert, through the same guarded call as traffic (breaker, retries,
    deadline, metrics). Raises ExpertNotFound for an unknown name; an expert's failure is reported."""
    from experts_registry.errors import ConclaveError

    expert = gw.store.get(name)
    t0 = time.perf_counter()
    try:
        gen = await collect(gw.call(expert, PING_MESSAGES, GenParams(max_tokens=PING_TOKENS, temperature=0.0)))
    except ConclaveError as exc:
        return {"expert": name, "ok": False, "seconds": round(time.perf_counter() - t0, 3),
                "error": exc.message, "status": exc.status}
    return {"expert": name, "ok": True, "seconds": round(time.perf_counter() - t0, 3), "text": gen.text[:200],
            "usage": gen.usage}


class WorkerHistory:
    """Loads, jobs and queued work of the cluster over time (one point per sample, bounded)."""

    def __init__(self, size: int = 360, every: float = 10.0):
        self.points: deque[dict] = deque(maxlen=size)
        self.every = every

    def add(self, now: float, rep: dict) -> None:
        if not rep or (self.points and now - self.points[-1]["t"] < self.every):
            return
        self.points.append({"t": round(now, 1), "loads": rep.get("loads_total", 0),
                            "jobs": sum(w.get("jobs", 0) for w in rep.get("workers", [])),
                            "queued": sum(p.get("queued", 0) for p in rep.get("placement", {}).values()),
                            "live": sum(1 for w in rep.get("workers", []) if w.get("alive"))})


def workers_view(gw: Gateway, rep: dict | None, history: WorkerHistory) -> dict[str, Any]:
    """The cluster (Redis queue) report with its history; without the Redis queue, says so and shows the
    in-process scheduler's figures instead."""
    if gw.settings.sched_queue != "redis":
        return {"queue": "local", "message": "the Redis queue is off (CONCLAVE_SCHED_QUEUE=local): local models "
                "run in this gateway's own scheduler; set CONCLAVE_SCHED_QUEUE=redis and start 'conclave worker' "
                "processes to see workers here", "local": gw.backends.stats()}
    if not rep:
        return {"queue": "redis", "message": "Redis does not answer: no worker report", "workers": [],
                "placement": {}, "history": list(history.points)}
    return {"queue": "redis", **rep, "history": list(history.points)}
