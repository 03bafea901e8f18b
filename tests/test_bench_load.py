"""The load benchmark's pieces: its quick mode (no LiteLLM) runs end to end and reports figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real


def test_quick_load_benchmark_without_litellm(tmp_path):
    out = tmp_path / "load.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.perf.bench_load", "--quick", "--no-litellm", "--no-sdk", "--no-trained-router",
                          "--json", str(out)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "added latency ms" in run.stdout and "routing cost" in run.stdout
    figures = json.loads(out.read_text())
    for system in ("direct", "conclave", "conclave-routed"):
        assert figures["closed"][system]["1"]["errors"] == 0 and figures["closed"][system]["1"]["requests"] > 0
    assert figures["sustained"]["conclave"]["sustained_rate"] > 0
    assert all(p["cpu_s"]["upstream"] >= 0 for p in figures["phases"])


def test_hotpath_benchmark_compares_the_fast_path_with_the_fastapi_route():
    run = subprocess.run([sys.executable, "-m", "benchmarks.perf.bench_hotpath", "--requests", "300"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {line.split()[0]: float(line.split()[1]) for line in run.stdout.splitlines()
            if line.startswith("  ") and line.strip().endswith("us")}
    assert set(rows) == {"asgi-floor", "fast-path", "fastapi-route", "pipeline"}
    assert all(v > 0 for v in rows.values())
    assert "fastapi-route / fast-path" in run.stdout


def test_routing_benchmark_writes_its_figures(tmp_path):
    """bench_routing end to end on two cheap routers: the JSON keys the routing issue asks for."""
    out = tmp_path / "routing.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.perf.bench_routing", "--n", "20", "--router", "coe",
                          "--router", "correct", "--json", str(out)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "CONCLAVE_CACHE_DIR": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "warmed on the 6679 training questions" in run.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["router"] for r in rows] == ["coe", "correct"]
    for r in rows:
        assert r["encoder"] == "static-minilm-256" and r["batch_qps"] > 0
        assert 0 < r["route_p50_ms"] <= r["single_p50_ms"] <= r["single_p99_ms"]
