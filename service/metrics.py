"""Prometheus metrics of one gateway (its own registry, so tests and apps never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("conclave_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.inflight = Gauge("conclave_inflight_requests", "HTTP requests in progress", ["route"], registry=r)
        self.latency = Histogram("conclave_request_seconds", "HTTP request latency", ["route"], buckets=BUCKETS, registry=r)
        self.expert_calls = Counter("conclave_expert_calls", "Calls to experts by outcome", ["expert", "outcome"], registry=r)
        self.expert_latency = Histogram("conclave_expert_seconds", "Time an expert took to answer", ["expert"],
                                        buckets=BUCKETS, registry=r)
        self.tokens = Counter("conclave_tokens", "Tokens by expert and kind", ["expert", "kind"], registry=r)
        self.errors = Counter("conclave_errors", "Errors returned to clients by type", ["type"], registry=r)
        self.routed = Counter("conclave_routed", "Routing decisions by router and chosen expert", ["router", "expert"], registry=r)

    def expert_done(self, expert: str, outcome: str, seconds: float, usage: dict | None) -> None:
        self.expert_calls.labels(expert, outcome).inc()
        self.expert_latency.labels(expert).observe(seconds)
        if usage:
            self.tokens.labels(expert, "prompt").inc(usage.get("prompt_tokens", 0))
            self.tokens.labels(expert, "completion").inc(usage.get("completion_tokens", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
