"""The dashboard's ring of routing decisions (service/pipeline/decisions.py) and the metric windows
behind its overview (service/core/metric_windows.py): pure logic, no server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from router import Choice, Decision
from service.core.metric_windows import History, figures, quantile, series, snapshot
from service.core.metrics import Metrics
from service.core.protocol import ChatRequest
from service.pipeline.decisions import MAX_CANDIDATES, DecisionLog, describe


def decision(chosen: str = "a", k: int = 1) -> Decision:
    return Decision((Choice(chosen, 0.9, {"matched": ["math"]}), Choice("b", 0.1, {"p": np.float32(0.25)})),
                    k, "tags", f"picked {chosen}")


def test_the_ring_is_bounded_and_newest_first():
    log = DecisionLog(size=3)
    for i in range(5):
        log.record(decision(f"e{i}"), f"prompt {i}", "conclave-auto", now=100.0 + i)
    got = log.recent()
    assert len(log) == 3 and [d["experts"] for d in got] == [["e4"], ["e3"], ["e2"]]
    assert [d["id"] for d in got] == [5, 4, 3] and got[0]["at"] == 104.0
    assert log.recent(limit=1)[0]["experts"] == ["e4"]


def test_prompts_are_a_keyed_hash_and_a_length_unless_the_operator_allows_text():
    hidden = DecisionLog(size=10, key=b"k1")
    entry = hidden.record(decision(), "the secret question", "conclave-auto", now=1.0)
    assert entry["prompt"] == {"chars": 19, "hash": entry["prompt"]["hash"]}
    assert "the secret question" not in repr(hidden.recent())               # not kept anywhere
    assert hidden.prompt_view("the secret question")["hash"] == entry["prompt"]["hash"]   # repeats show
    assert DecisionLog(key=b"k2").prompt_view("the secret question")["hash"] != entry["prompt"]["hash"]
    shown = DecisionLog(size=10, show_prompts=True)
    assert shown.record(decision(), "visible", "conclave-auto", now=1.0)["prompt"]["text"] == "visible"


def test_a_ring_of_size_zero_keeps_nothing():
    log = DecisionLog(size=0)
    assert log.record(decision(), "x", "conclave-auto", now=1.0) is None
    assert log.recent() == [] and len(log) == 0


def test_every_candidate_is_described_with_its_evidence_as_plain_json():
    d = describe(Decision(tuple(Choice(f"e{i}", 1.0 / (i + 1), {"v": np.array([i, 1])}) for i in range(40)),
                          2, "knn", "r", stopping={"margin": np.float64(0.5)}, weights=(0.7, 0.3)))
    assert len(d["candidates"]) == MAX_CANDIDATES
    assert [c["chosen"] for c in d["candidates"][:3]] == [True, True, False]
    assert d["candidates"][0]["weight"] == 0.7 and d["candidates"][1]["evidence"] == {"v": [1, 1]}
    assert d["stopping"] == {"margin": 0.5} and type(d["stopping"]["margin"]) is float


def test_the_gateway_records_routed_requests_but_not_previews(fake_gateway):
    req = ChatRequest(model="conclave-auto", messages=[{"role": "user", "content": "an algebra question"}],
                      conclave={"router": "tags"})
    asyncio.run(fake_gateway.route(req, record=False))
    assert fake_gateway.decisions.recent() == []
    asyncio.run(fake_gateway.route(req))
    [entry] = fake_gateway.decisions.recent()
    assert entry["experts"] == ["mathy"] and entry["router"] == "tags" and entry["model"] == "conclave-auto"
    assert "text" not in entry["prompt"] and entry["prompt"]["chars"] == len("an algebra question")


def test_the_gateway_ring_follows_the_settings(fake_gateway):
    from service.pipeline.gateway import Gateway

    gw = Gateway(fake_gateway.settings.with_(ui_decisions=2, ui_show_prompts=True), fake_gateway.store,
                 fake_gateway.backends)
    for text in ("one algebra", "two algebra", "three algebra"):
        asyncio.run(gw.route(ChatRequest(model="conclave-auto", messages=[{"role": "user", "content": text}],
                                         conclave={"router": "tags"})))
    assert [d["prompt"]["text"] for d in gw.decisions.recent()] == ["three algebra", "two algebra"]


# -- metric windows ---------------------------------------------------------------------------------

def test_quantiles_interpolate_inside_buckets():
    hist = {"le": [(0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)], "count": 100.0, "sum": 20.0}
    assert quantile(0.5, hist) == pytest.approx(0.1)
    assert quantile(0.75, hist) == pytest.approx(0.55)
    assert quantile(0.5, {"le": [], "count": 0.0, "sum": 0.0}) is None
    beyond = {"le": [(0.1, 0.0), (1.0, 1.0), (float("inf"), 10.0)], "count": 10.0, "sum": 99.0}
    assert quantile(0.99, beyond) == 1.0   # past the last finite bound: that bound
    one = {"le": [(10.0, 0.0), (30.0, 1.0), (float("inf"), 1.0)], "count": 1.0, "sum": 12.5}
    assert quantile(0.5, one) == quantile(0.99, one) == 12.5   # a single observation is exact


def test_a_window_subtracts_the_snapshot_taken_before_it():
    m = Metrics()
    chat = "/v1/chat/completions"
    m.requests.labels(chat, "200").inc(5)                  # before the window
    history = History(size=10, every=5.0)
    history.add(1000.0, snapshot(m))
    for _ in range(3):
        m.requests.labels(chat, "200").inc()
        m.latency.labels(chat).observe(0.02)
    m.requests.labels(chat, "502").inc()
    m.errors.labels("upstream_error").inc()
    m.routed.labels("tags", "a").inc(2)
    m.expert_done("a", "ok", 0.3, {"prompt_tokens": 4, "completion_tokens": 6})
    m.expert_done("a", "error", 0.01, None)
    now = snapshot(m)
    t, base = history.base(1060.0, 300)
    f = figures(now, base, 1060.0 - t)
    assert f["requests"]["count"] == 4 and f["requests"]["status"] == {"2xx": 3, "5xx": 1}
    assert f["requests"]["per_s"] == pytest.approx(4 / 60, abs=1e-3)
    assert 0.01 < f["latency_s"]["p50"] <= 0.025 and f["latency_s"]["mean"] == pytest.approx(0.02)
    assert f["errors"] == {"upstream_error": 1} and f["tokens"] == {"prompt": 4, "completion": 6}
    assert f["routing"] == {"routed": 2, "direct": 1, "by_router": {"tags": 2}}
    [a] = f["experts"]
    assert (a["expert"], a["calls"], a["ok"], a["failed"], a["tokens"]) == ("a", 2, 1, 1, 10)
    points = series(history.items(), (1060.0, now), 0)
    assert len(points) == 1 and points[0]["per_s"] == pytest.approx(4 / 60, abs=1e-3) and points[0]["errors"] == 1


def test_history_is_bounded_and_spaced():
    h = History(size=3, every=5.0)
    assert h.add(0.0, {}) and not h.add(1.0, {}) and h.add(5.0, {})
    for t in (10.0, 15.0, 20.0):
        h.add(t, {})
    assert [t for t, _ in h.items()] == [10.0, 15.0, 20.0]
    assert h.base(21.0, 8.0)[0] == 10.0 and h.base(21.0, 100.0)[0] == 10.0


def test_the_settings_come_from_the_environment():
    from experts_registry.errors import ConfigError
    from service.core.config import load_settings

    default = load_settings({"CONCLAVE_HOME": "/tmp/x"})
    assert default.ui_decisions == 200 and default.ui_show_prompts is False
    s = load_settings({"CONCLAVE_HOME": "/tmp/x", "CONCLAVE_UI_DECISIONS": "0", "CONCLAVE_UI_SHOW_PROMPTS": "1"})
    assert s.ui_decisions == 0 and s.ui_show_prompts is True
    with pytest.raises(ConfigError, match="CONCLAVE_UI_DECISIONS must be >= 0"):
        load_settings({"CONCLAVE_UI_DECISIONS": "-1"})
