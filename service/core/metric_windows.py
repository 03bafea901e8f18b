"""Windows over the gateway's own Prometheus counters, for the dashboard's overview (``/ui``).

Prometheus counters and histograms only ever grow, so a figure "over the last five minutes" is the
difference between the counters now and a snapshot taken about five minutes ago. :class:`History`
keeps snapshots (a bounded ring, one every few seconds); :func:`overview` subtracts one from another
and reads rates, latency quantiles (interpolated inside the histogram's buckets, as Prometheus'
``histogram_quantile`` does, so they are as coarse as the buckets), errors, tokens and routing shares.
Pure: the caller passes the time and the snapshots.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any

from .metrics import Metrics

CHAT_ROUTES = ("/v1/chat/completions", "/ui/api/chat")
Snapshot = dict[str, dict]


def _series(metric) -> list:
    return [s for family in metric.collect() for s in family.samples]


def _counter(metric, n: int) -> dict:
    """{label values (n of them, joined by '|'): value} of a labelled counter's ``_total`` samples."""
    return {"|".join(s.labels[k] for k in list(s.labels)[:n]): s.value
            for s in _series(metric) if s.name.endswith("_total")}


def _histogram(metric) -> dict:
    """{label: {"le": [(bound, cumulative count)...], "count": n, "sum": s}} of a one-label histogram."""
    out: dict[str, dict] = {}
    for s in _series(metric):
        key = next((v for k, v in s.labels.items() if k != "le"), "")
        h = out.setdefault(key, {"le": [], "count": 0.0, "sum": 0.0})
        if s.name.endswith("_bucket"):
            h["le"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            h["count"] = s.value
        elif s.name.endswith("_sum"):
            h["sum"] = s.value
    return out


def snapshot(m: Metrics) -> Snapshot:
    """The counters the overview needs, as plain numbers."""
    return {"requests": _counter(m.requests, 2), "latency": _histogram(m.latency),
            "calls": _counter(m.expert_calls, 2), "expert_latency": _histogram(m.expert_latency),
            "tokens": _counter(m.tokens, 2), "errors": _counter(m.errors, 1), "routed": _counter(m.routed, 2)}


class History:
    """Snapshots, newest last, at most ``size`` of them, at least ``every`` seconds apart."""

    def __init__(self, size: int = 200, every: float = 5.0):
        self.every = every
        self._ring: deque[tuple[float, Snapshot]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, now: float, snap: Snapshot) -> bool:
        with self._lock:
            if self._ring and now - self._ring[-1][0] < self.every:
                return False
            self._ring.append((now, snap))
            return True

    def items(self) -> list[tuple[float, Snapshot]]:
        with self._lock:
            return list(self._ring)

    def base(self, now: float, window: float) -> tuple[float, Snapshot] | None:
        """The newest snapshot at least ``window`` seconds old, else the oldest one."""
        items = self.items()
        older = [it for it in items if it[0] <= now - window]
        return older[-1] if older else (items[0] if items else None)


def _minus(new: dict, old: dict) -> dict:
    return {k: v - old.get(k, 0.0) for k, v in new.items()}


def _hist_minus(new: dict, old: dict | None) -> dict:
    if not old:
        return new
    before = dict(old["le"])
    return {"le": [(b, c - before.get(b, 0.0)) for b, c in new["le"]], "count": new["count"] - old["count"],
            "sum": new["sum"] - old["sum"]}


def quantile(q: float, hist: dict | None) -> float | None:
    """The q-quantile (seconds) of a histogram (or of the difference of two), None without observations;
    above the last finite bucket it is that bound (the true value is larger)."""
    if not hist or hist["count"] <= 0:
        return None
    if hist["count"] == 1:
        return hist["sum"]   # one observation: its exact value
    rank, lower, below = q * hist["count"], 0.0, 0.0
    for bound, cum in sorted(hist["le"]):
        if cum >= rank:
            if math.isinf(bound):
                return lower
            inside = cum - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = (bound if not math.isinf(bound) else lower), cum
    return lower


def _merge(hists: list[dict]) -> dict | None:
    if not hists:
        return None
    le: dict[float, float] = {}
    for h in hists:
        for b, c in h["le"]:
            le[b] = le.get(b, 0.0) + c
    return {"le": sorted(le.items()), "count": sum(h["count"] for h in hists), "sum": sum(h["sum"] for h in hists)}


def _chat_latency(new: Snapshot, old: Snapshot | None) -> dict | None:
    old_lat = (old or {}).get("latency", {})
    return _merge([_hist_minus(new["latency"][r], old_lat.get(r)) for r in CHAT_ROUTES if r in new["latency"]])


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def figures(new: Snapshot, old: Snapshot | None, seconds: float) -> dict[str, Any]:
    """Everything the overview shows for the span between two snapshots ``seconds`` apart."""
    old = old or {k: {} for k in new}
    req = _minus(new["requests"], old["requests"])
    chat = {k: v for k, v in req.items() if k.split("|")[0] in CHAT_ROUTES}
    count = sum(chat.values())
    status: dict[str, float] = {}
    for k, v in chat.items():
        klass = k.split("|")[1][:1] + "xx"
        status[klass] = status.get(klass, 0.0) + v
    lat = _chat_latency(new, old)
    tokens = _minus(new["tokens"], old["tokens"])
    routed = sum(_minus(new["routed"], old["routed"]).values())
    by_router: dict[str, float] = {}
    for k, v in _minus(new["routed"], old["routed"]).items():
        by_router[k.split("|")[0]] = by_router.get(k.split("|")[0], 0.0) + v
    ok = status.get("2xx", 0.0)
    return {
        "seconds": round(seconds, 1),
        "requests": {"count": count, "per_s": _round(count / seconds if seconds > 0 else 0.0, 3), "status": status},
        "latency_s": {"p50": _round(quantile(0.5, lat)), "p99": _round(quantile(0.99, lat)),
                      "mean": _round(lat["sum"] / lat["count"]) if lat and lat["count"] > 0 else None},
        "errors": {k: v for k, v in _minus(new["errors"], old["errors"]).items() if v > 0},
        "tokens": {"prompt": sum(v for k, v in tokens.items() if k.endswith("|prompt")),
                   "completion": sum(v for k, v in tokens.items() if k.endswith("|completion"))},
        "routing": {"routed": routed, "direct": max(0.0, ok - routed), "by_router": by_router},
        "experts": _experts(new, old, tokens),
    }


def _experts(new: Snapshot, old: Snapshot, tokens: dict) -> list[dict]:
    calls = _minus(new["calls"], old["calls"])
    names = sorted({k.split("|")[0] for k, v in calls.items() if v > 0})
    out = []
    for name in names:
        mine = {k.split("|")[1]: v for k, v in calls.items() if k.split("|")[0] == name}
        lat = _hist_minus(new["expert_latency"][name], old.get("expert_latency", {}).get(name)) \
            if name in new["expert_latency"] else None
        out.append({"expert": name, "calls": sum(mine.values()), "ok": mine.get("ok", 0.0),
                    "failed": sum(v for o, v in mine.items() if o != "ok"),
                    "p50_s": _round(quantile(0.5, lat)), "p99_s": _round(quantile(0.99, lat)),
                    "tokens": tokens.get(f"{name}|prompt", 0.0) + tokens.get(f"{name}|completion", 0.0)})
    return out


def series(items: list[tuple[float, Snapshot]], now_item: tuple[float, Snapshot], since: float) -> list[dict]:
    """Per-interval points from consecutive snapshots newer than ``since``: requests/s, p50, p99, errors."""
    points = [it for it in items if it[0] >= since]
    if not points or points[-1][0] < now_item[0]:
        points.append(now_item)
    out = []
    for (t0, a), (t1, b) in zip(points, points[1:]):
        if t1 <= t0:
            continue
        lat = _chat_latency(b, a)
        chat = sum(v for k, v in _minus(b["requests"], a["requests"]).items() if k.split("|")[0] in CHAT_ROUTES)
        out.append({"t": round(t1, 1), "per_s": round(chat / (t1 - t0), 3),
                    "p50_s": _round(quantile(0.5, lat)), "p99_s": _round(quantile(0.99, lat)),
                    "errors": sum(_minus(b["errors"], a["errors"]).values())})
    return out
