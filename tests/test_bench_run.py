"""``conclave bench run`` / ``bench sweep``: resume, config checks, the offline schedule, shared
generation across sweep cells (scripted worker), then real runs: Ctrl-C and resume of a live
llama.cpp run in a subprocess, a small live sweep, and a run against a real gateway over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.generate import AnswerCache, Generator
from benchmarks.runner import Cell, RunConfig, run_cells
from experts_registry.errors import InvalidRequest
from service.core.backend import Delta, usage_dict
from service.workers.fake import FakeWorker
from tests.conftest import fake_expert

CONCLAVE = str(Path(sys.executable).with_name("conclave"))


class ScriptedWorker(FakeWorker):
    """FakeWorker whose experts state a letter: model ``fake:answer=X`` says "The answer is (X)."."""

    def generate(self, expert, batch) -> None:
        self.events.append(("batch", expert.name, len(batch)))
        for job in batch:
            if job.cancel.is_set():
                continue
            job.emit(Delta(f"Thinking. The answer is ({expert.model.split('=')[-1]})."))
            job.emit(Delta("", "stop", usage_dict(10, 6)))

    def jobs(self) -> int:
        return sum(e[2] for e in self.events if e[0] == "batch")


@pytest.fixture
def scripted(tmp_path):
    """A gateway with three scripted experts (A, B, B) and one shared scripted worker."""
    from experts_registry import open_store
    from benchmarks.runner import local_gateway
    from service.core.config import load_settings

    settings = load_settings().with_(generalist="alpha", sched_max_batch=2)
    store = open_store(tmp_path / "store")
    store.add(fake_expert("alpha", "answer=A", skills=("general",)))
    store.add(fake_expert("bravo", "answer=B", skills=("law",)))
    store.add(fake_expert("bravo2", "answer=B", skills=("physics",)))
    worker = ScriptedWorker(max_models=1)
    gw = local_gateway(settings, store)
    return gw, worker


def _cells(gw, worker, out: Path, configs: dict[str, RunConfig], cache: Path | None = None):
    gen = Generator(gw, AnswerCache(cache or out / "candidates.jsonl"), workers={"llamacpp": lambda s, n: worker})
    cells = [Cell(name, cfg, out / name, gw) for name, cfg in configs.items()]
    return cells, gen, run_cells(cells, gen)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


VOTE3 = RunConfig(dataset="mmlu", limit=6, shots=0, cot=False, max_tokens=8, router="tags", k=3, aggregator="vote")


def test_vote_run_records_scores_and_loads_each_expert_once(scripted, tmp_path):
    gw, worker = scripted
    _, gen, (summary,) = _cells(gw, worker, tmp_path, {"run": VOTE3})
    records = _lines(tmp_path / "run" / "results.jsonl")
    assert len(records) == summary["n"] == 6
    for r in records:
        assert r["final_answer"] == "B" and r["correct"] == (r["gold"] == "B") and r["parsed"]
        assert sorted(c["answer"] for c in r["candidates"]) == ["A", "B", "B"]
        assert r["routing"]["router"] == "tags" and r["routing"]["k"] == 3 and r["calls"] == 3
        assert r["aggregation"]["votes"] == {"B": 2, "A": 1}
    assert sorted(worker.loads()) == ["alpha", "bravo", "bravo2"]       # 18 jobs, batches of 2, 3 loads
    assert worker.jobs() == 18 and gen.stats["loads"] == 3 and summary["loads"] == 3
    assert summary["effective_k"] == 3 and summary["config"]["k"] == 3
    assert (tmp_path / "run" / "summary.md").is_file()


def test_synthesis_calls_the_aggregator_expert_once_per_question_batched(scripted, tmp_path):
    gw, worker = scripted
    cfg = VOTE3.with_(aggregator="synthesis", limit=4)
    _, _, (summary,) = _cells(gw, worker, tmp_path, {"run": cfg})
    records = _lines(tmp_path / "run" / "results.jsonl")
    assert len(records) == 4 and worker.jobs() == 4 * 3 + 4
    for r in records:   # no profile: the best-ranked survivor (the generalist, alpha) synthesises
        assert r["aggregation"]["aggregated_by"] == "alpha" and r["final_answer"] == "A" and r["calls"] == 4
    assert worker.loads() == ["alpha", "bravo", "bravo2", "alpha"]     # candidates, then one batch of syntheses
    (tmp_path / "run" / "results.jsonl").unlink()
    _cells(gw, worker, tmp_path, {"run": cfg})
    assert worker.jobs() == 16                                          # syntheses came from candidates.jsonl


def test_resume_skips_done_questions_and_generated_answers(scripted, tmp_path):
    gw, worker = scripted
    single = RunConfig(dataset="mmlu", limit=5, shots=0, cot=False, max_tokens=8, experts=("bravo",))
    _cells(gw, worker, tmp_path, {"run": single})
    assert worker.jobs() == 5
    _, _, (again,) = _cells(gw, worker, tmp_path, {"run": single})    # everything answered: no call
    assert worker.jobs() == 5 and again["loads"] == 1 and again["calls"] == 5   # totals over both invocations
    results = tmp_path / "run" / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])     # 2 records and a torn line
    _, _, (summary,) = _cells(gw, worker, tmp_path, {"run": single})
    assert worker.jobs() == 5                                           # answers came from candidates.jsonl
    ids = [r["id"] for r in _lines(results)]
    assert len(ids) == len(set(ids)) == 5 == summary["n"]


def test_a_different_config_is_refused(scripted, tmp_path):
    gw, worker = scripted
    _cells(gw, worker, tmp_path, {"run": VOTE3})
    with pytest.raises(InvalidRequest, match="different config"):
        _cells(gw, worker, tmp_path, {"run": VOTE3.with_(k=2)})


def test_sweep_cells_share_generation(scripted, tmp_path):
    from benchmarks.sweep import SweepSpec, run_sweep

    gw, worker = scripted
    spec = SweepSpec(name="s", run={"dataset": "mmlu", "limit": 4, "shots": 0, "cot": False, "max_tokens": 8},
                     singles=["alpha", "bravo"], routers=["tags"], ks=[1, 2, 3], aggregators=["vote", "first"])
    gen = Generator(gw, AnswerCache(tmp_path / "candidates.jsonl"), workers={"llamacpp": lambda s, n: worker})
    table = run_sweep(spec, tmp_path, gw, gen)
    cells = ["single-alpha", "single-bravo", "tags-k1", "tags-k2-vote", "tags-k2-first", "tags-k3-vote",
             "tags-k3-first"]
    assert all(name in table for name in cells)
    assert worker.jobs() == 12                        # 4 questions x 3 experts, once for 7 cells
    assert sorted(worker.loads()) == ["alpha", "bravo", "bravo2"]
    keys = [line["key"] for line in _lines(tmp_path / "candidates.jsonl")]
    assert len(keys) == len(set(keys)) == 12
    assert json.loads((tmp_path / "summary.json").read_text())["cells"].keys() == set(cells)


def test_sweep_file_expands_and_rejects_unknown_keys(tmp_path):
    from benchmarks.sweep import expand, load_spec

    spec = load_spec(Path(__file__).parent.parent / "benchmarks" / "sweeps" / "mmlu-small.yaml")
    names = [name for name, _ in expand(spec)]
    assert names == ["single-smollm2", "single-gemma-3-270m", "tags-k1", "tags-k3-vote"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: mmlu\nrouters: [tags]\nkays: [1]\n")
    with pytest.raises(Exception, match="unknown key"):
        load_spec(bad)


def test_bench_help_lists_run_and_sweep():
    from benchmarks.cli import bench

    out = CliRunner().invoke(bench, ["--help"]).output
    assert "run " in out and "sweep " in out and "report " in out and "replay " in out


def test_cli_refuses_a_folder_of_another_run(tmp_path):
    from benchmarks.cli import bench
    from benchmarks.results import RunDir

    RunDir(tmp_path / "run").write_config({"dataset": "gpqa"})
    result = CliRunner().invoke(bench, ["run", "--dataset", "mmlu", "--limit", "2", "--experts", "smollm2",
                                        "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1 and "different config" in result.output and "another" in result.output


# ---- real parts ------------------------------------------------------------------------------

RUN_ARGS = ["bench", "run", "--dataset", "mmlu", "--limit", "12", "--experts", "smollm2", "--shots", "0",
            "--no-cot", "--max-tokens", "6", "--quiet"]


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.mark.real
def test_ctrl_c_then_resume_a_live_run(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "CONCLAVE_LLAMA_THREADS": "2"}
    proc = subprocess.Popen([CONCLAVE, *RUN_ARGS, "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _count_lines(out / "results.jsonl") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err
    first = _lines(out / "results.jsonl")                 # every line parses: the folder is consistent
    assert 3 <= len(first) < 12
    done = subprocess.run([CONCLAVE, *RUN_ARGS, "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in _lines(out / "results.jsonl")]
    assert len(ids) == len(set(ids)) == 12
    keys = [c["key"] for c in _lines(out / "candidates.jsonl")]
    assert len(keys) == len(set(keys)) == 12              # no (expert, question) generated twice
    assert json.loads((out / "summary.json").read_text())["n"] == 12


@pytest.mark.real
def test_live_sweep_with_the_bundled_experts(tmp_path, monkeypatch):
    from benchmarks.cli import bench

    monkeypatch.setenv("CONCLAVE_LLAMA_THREADS", "2")
    config = tmp_path / "tiny.yaml"
    config.write_text("dataset: mmlu\nlimit: 4\nshots: 0\ncot: false\nmax_tokens: 6\n"
                      "singles: [smollm2, gemma-3-270m]\nrouters: [tags]\nks: [1, 2]\naggregators: [vote]\n")
    result = CliRunner().invoke(bench, ["sweep", str(config), "--out", str(tmp_path / "sweep"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "tags-k2-vote" in result.output and "loads: 2 " in result.output   # each model loaded once
    sweep = tmp_path / "sweep"
    for cell in ("single-smollm2", "single-gemma-3-270m", "tags-k1", "tags-k2-vote"):
        summary = json.loads((sweep / cell / "summary.json").read_text())
        assert summary["n"] == 4 and summary["unparsable"] + summary["parsed"] == 4
        assert (sweep / cell / "plot_categories.png").stat().st_size > 1000
    assert (sweep / "sweep_accuracy_vs_k.png").is_file() and (sweep / "summary.md").is_file()


@pytest.mark.real
def test_run_against_a_real_gateway(tmp_path):
    from benchmarks.cli import bench
    from tests.servers import running_gateway

    with running_gateway(tmp_path / "home", tmp_path / "gateway.log", CONCLAVE_API_KEYS="sk-bench") as base:
        args = ["run", "--dataset", "mmlu", "--limit", "2", "--shots", "0", "--no-cot", "--max-tokens", "6",
                "--url", base, "--api-key", "sk-bench", "--quiet"]
        routed = CliRunner().invoke(bench, [*args, "--router", "tags", "--k", "2", "--out", str(tmp_path / "r")])
        denied = CliRunner().invoke(bench, ["run", "--dataset", "mmlu", "--limit", "1", "--experts", "smollm2",
                                            "--url", base, "--api-key", "sk-nope-123", "--out", str(tmp_path / "d")])
    assert routed.exit_code == 0, routed.output
    assert "sk-bench" not in routed.output
    records = _lines(tmp_path / "r" / "results.jsonl")
    assert len(records) == 2
    for r in records:
        assert sorted(c["expert"] for c in r["candidates"]) == ["gemma-3-270m", "smollm2"]
        assert r["routing"]["router"] == "tags" and r["aggregator"] == "vote"
    assert denied.exit_code == 1 and "--api-key" in denied.output and "sk-nope-123" not in denied.output
