"""Prometheus metrics of one gateway (its own registry, so tests and apps never share counters).

Under ``conclave serve --workers N`` (PROMETHEUS_MULTIPROC_DIR set before the processes start) the
counters, histograms and the in-flight gauge live in prometheus-client's per-process files, and
:meth:`Metrics.render` sums every process's (``MultiProcessCollector``); the scheduler and placement
collectors, read at scrape time, are added from the process that answers the scrape.
"""

from __future__ import annotations

import os
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("conclave_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.inflight = Gauge("conclave_inflight_requests", "HTTP requests in progress", ["route"], registry=r,
                              multiprocess_mode="livesum")
        self.latency = Histogram("conclave_request_seconds", "HTTP request latency", ["route"], buckets=BUCKETS, registry=r)
        self.expert_calls = Counter("conclave_expert_calls", "Calls to experts by outcome", ["expert", "outcome"], registry=r)
        self.expert_latency = Histogram("conclave_expert_seconds", "Time an expert took to answer", ["expert"],
                                        buckets=BUCKETS, registry=r)
        self.tokens = Counter("conclave_tokens", "Tokens by expert and kind", ["expert", "kind"], registry=r)
        self.errors = Counter("conclave_errors", "Errors returned to clients by type", ["type"], registry=r)
        self.retries = Counter("conclave_retries", "Retries of expert calls", ["expert"], registry=r)
        self.fallbacks = Counter("conclave_fallbacks", "Routed requests answered by a fallback expert",
                                 ["failed", "answered"], registry=r)
        self.breaker_trips = Counter("conclave_breaker_trips", "Circuit breaker openings", ["expert"], registry=r)
        self.routed = Counter("conclave_routed", "Routing decisions by router and chosen expert", ["router", "expert"], registry=r)
        self.idempotent = Counter("conclave_idempotent_requests", "Requests with an Idempotency-Key on the Redis queue: "
                                  "queued (new job), resumed (waited for a job queued before), stored (answered from "
                                  "a stored answer), conflict (same key, other body)", ["outcome"], registry=r)

        self._children: dict[tuple, object] = {}
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.watched = CollectorRegistry()   # the scrape-time collectors, again: added to the processes' sum

    def child(self, metric, *labels):
        """``metric.labels(*labels)``, looked up once: label values on the request path are few (routes,
        statuses, registered experts) and prometheus_client's lookup costs microseconds each time."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def expert_done(self, expert: str, outcome: str, seconds: float, usage: dict | None) -> None:
        self.child(self.expert_calls, expert, outcome).inc()
        self.child(self.expert_latency, expert).observe(seconds)
        if usage:
            self.child(self.tokens, expert, "prompt").inc(usage.get("prompt_tokens", 0))
            self.child(self.tokens, expert, "completion").inc(usage.get("completion_tokens", 0))

    def watch_schedulers(self, source: Callable[[], dict[str, dict]]) -> None:
        """Export scheduler snapshots (``{kind: SchedStats.snapshot()}``), read at scrape time."""
        if not getattr(self, "_watching", False):
            self._watch(_SchedulerCollector(source))
            self._watching = True

    def watch_placement(self, source: Callable[[], dict]) -> None:
        """Export the cluster's placement table (``placement.report()``), read at scrape time."""
        if not getattr(self, "_watching_placement", False):
            self._watch(_PlacementCollector(source))
            self._watching_placement = True

    def _watch(self, collector) -> None:
        self.registry.register(collector)
        self.watched.register(collector)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)
        return generate_latest(summed) + generate_latest(self.watched)

    def close(self) -> None:
        """This process stops: its in-flight gauge leaves the sum (the counters stay counted)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())


class _SchedulerCollector:
    """conclave_scheduler_*: loads, unloads, seconds loading vs generating, batches and their sizes,
    queue wait p50/p99 per expert, rejected (429) and cancelled requests."""

    def __init__(self, source: Callable[[], dict[str, dict]]):
        self.source = source

    def describe(self):
        return []

    def collect(self):
        snaps = self.source()
        p = "conclave_scheduler_"
        loads = CounterMetricFamily(p + "loads", "Model loads by backend kind and expert", labels=["kind", "expert"])
        unloads = CounterMetricFamily(p + "unloads", "Model unloads by backend kind", labels=["kind"])
        secs = CounterMetricFamily(p + "seconds", "Worker seconds by phase (load, unload, generate)",
                                   labels=["kind", "phase"])
        batches = CounterMetricFamily(p + "batches", "Batches run by backend kind", labels=["kind"])
        jobs = CounterMetricFamily(p + "jobs", "Requests run, cancelled or rejected (429)", labels=["kind", "outcome"])
        size = GaugeMetricFamily(p + "batch_size_mean", "Mean batch size", labels=["kind"])
        wait = GaugeMetricFamily(p + "queue_wait_seconds", "Queue wait quantiles per expert (recent requests)",
                                 labels=["kind", "expert", "quantile"])
        for kind, s in snaps.items():
            for expert, n in s["loads_by_expert"].items():
                loads.add_metric([kind, expert], n)
            unloads.add_metric([kind], s["unloads"])
            for phase in ("load", "unload", "generate"):
                secs.add_metric([kind, phase], s[f"{phase}_seconds"])
            batches.add_metric([kind], s["batches"])
            for outcome in ("jobs", "cancelled", "rejected"):
                jobs.add_metric([kind, "run" if outcome == "jobs" else outcome], s[outcome])
            size.add_metric([kind], s["batch_size_mean"])
            for expert, w in s["wait_by_expert"].items():
                for q in ("p50", "p99"):
                    wait.add_metric([kind, expert, "0.5" if q == "p50" else "0.99"], w[q])
        return [loads, unloads, secs, batches, jobs, size, wait]


class _PlacementCollector:
    """conclave_cluster_*: live workers, heartbeat age, which worker holds which expert, loads and
    unloads per worker and expert, jobs served, busy seconds, jobs queued per expert."""

    def __init__(self, source: Callable[[], dict]):
        self.source = source

    def describe(self):
        return []

    def collect(self):
        rep, p = self.source() or {}, "conclave_cluster_"
        up = GaugeMetricFamily(p + "worker_up", "1 while the worker heart-beats", labels=["worker", "kind"])
        age = GaugeMetricFamily(p + "worker_heartbeat_age_seconds", "Seconds since the last heartbeat", labels=["worker"])
        holds = GaugeMetricFamily(p + "holds", "1 when the worker holds the expert now", labels=["worker", "expert"])
        loads = GaugeMetricFamily(p + "loads", "Loads so far by worker and expert", labels=["worker", "expert"])
        unloads = GaugeMetricFamily(p + "unloads", "Unloads so far by worker and expert", labels=["worker", "expert"])
        jobs = GaugeMetricFamily(p + "worker_jobs", "Jobs served by the worker", labels=["worker"])
        busy = GaugeMetricFamily(p + "worker_busy_seconds", "Seconds loading, unloading and generating", labels=["worker"])
        queued = GaugeMetricFamily(p + "queued", "Jobs in the expert's queue", labels=["expert"])
        holders = GaugeMetricFamily(p + "holders", "Live workers holding the expert", labels=["expert"])
        for w in rep.get("workers", []):
            up.add_metric([w["name"], w["kind"] or ""], 1 if w["alive"] else 0)
            age.add_metric([w["name"]], w["heartbeat_age_s"])
            for e in w["holds"]:
                holds.add_metric([w["name"], e], 1)
            for e, n in w["loads"].items():
                loads.add_metric([w["name"], e], n)
            for e, n in w["unloads"].items():
                unloads.add_metric([w["name"], e], n)
            jobs.add_metric([w["name"]], w["jobs"])
            busy.add_metric([w["name"]], w["busy_s"])
        for e, pl in rep.get("placement", {}).items():
            queued.add_metric([e], pl["queued"])
            holders.add_metric([e], len(pl["holders"]))
        return [up, age, holds, loads, unloads, jobs, busy, queued, holders]
