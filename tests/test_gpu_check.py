"""benchmarks/gpu_check.py runs on a machine with only PyTorch: here, on CPU at tiny sizes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
STDLIB = set(sys.stdlib_module_names)


def test_gpu_check_imports_only_the_standard_library_and_torch():
    tree = ast.parse(SCRIPT.read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots - STDLIB == {"torch"}, roots - STDLIB


def test_gpu_check_runs_at_tiny_sizes_and_says_when_no_gpu_is_present(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "0.01,0.02", "--dir", str(tmp_path),
                           "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert [r["size_gb"] for r in doc["rows"]] == [0.01, 0.02]
    for row in doc["rows"]:
        assert "disk_skipped" not in row and row["read_cold_s"] > 0 and row["read_warm_s"] > 0 and row["cache_dropped"] is True
        if not doc["gpu"]:
            assert row["h2d_pinned_s"] is None and row["tiers_s"] == {"sleep1": None, "page_cache": None, "disk": None}
        else:
            assert row["h2d_pinned_s"] > 0 and row["tiers_s"]["disk"] > row["read_cold_s"]
    if not doc["gpu"]:
        assert "no GPU is present" in done.stdout
    assert "tier costs for the scheduler's cost model" in done.stdout
    assert list(tmp_path.glob("gpu-check-*")) == []                         # its weight files are gone
    tight = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "0.01,0.02", "--dir", str(tmp_path),
                            "--budget-s", "0.000001", "--json", "-"], capture_output=True, text=True, timeout=300)
    rows = json.loads(tight.stdout[tight.stdout.index("{"):])["rows"]
    assert rows[0]["read_cold_s"] > 0 and rows[1]["disk_skipped"] is True and rows[1]["read_cold_s"] is None
    assert "skipped" in tight.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--sizes needs positive numbers" in bad.stderr
