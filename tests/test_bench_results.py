"""Benchmark results format: run folders, summaries, plots, ``bench report`` and ``bench replay --out``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from benchmarks.cli import bench
from benchmarks.results import RunDir, render, summarize, wilson, write_sweep_report
from experts_registry.errors import InvalidRequest
from tests.router_fakes import write_replay_files

PNG = b"\x89PNG\r\n\x1a\n"
CFG = {"dataset": "mmlu", "router": "knn", "k": 2, "aggregator": "vote", "experts": ["a", "b"], "quiet": False}


def record(i: int, category: str, correct: bool, answers=("A", "B"), gold="A", **kw) -> dict:
    cands = [{"expert": e, "answer": a, "text": f"The answer is ({a}).", "tokens": 10, "latency_s": 0.5,
              "error": None} for e, a in zip(("a", "b"), answers)]
    return {"id": f"mmlu/test/x/{i}", "dataset": "mmlu", "subject": f"{category}-sub", "category": category,
            "gold": gold, "experts": ["a", "b"], "candidates": cands, "final_answer": "A" if correct else "B",
            "correct": correct, "parsed": True, "tokens": 20, "calls": 2, "latency_s": 1.0 + i,
            "routing": {"router": "knn", "reason": "r"}, "aggregator": "vote", **kw}


def test_append_records_and_done_ids(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.records() == [] and run.done_ids() == set() and run.config() is None
    for i in range(3):
        run.append(record(i, "STEM", i != 1))
    assert [r["id"] for r in run.records()] == [f"mmlu/test/x/{i}" for i in range(3)]
    assert run.done_ids() == {f"mmlu/test/x/{i}" for i in range(3)}
    with pytest.raises(InvalidRequest):
        run.append({"no": "id"})


def test_torn_last_line_is_ignored_then_cut_before_the_next_append(tmp_path):
    run = RunDir(tmp_path)
    run.append(record(0, "STEM", True))
    with open(run.results_path, "a") as f:
        f.write('{"id": "mmlu/test/x/1", "datas')                # killed mid-write
    assert RunDir(tmp_path).done_ids() == {"mmlu/test/x/0"}
    resumed = RunDir(tmp_path)
    resumed.append(record(2, "STEM", True))
    assert resumed.done_ids() == {"mmlu/test/x/0", "mmlu/test/x/2"}
    assert all(json.loads(line) for line in run.results_path.read_text().splitlines())


def test_config_matches_ignoring_non_identity_keys(tmp_path):
    run = RunDir(tmp_path)
    assert run.matches(CFG)                                      # empty folder
    run.write_config(CFG)
    assert run.config() == CFG
    assert run.matches({**CFG, "quiet": True, "progress": False})
    run.write_config({**CFG, "quiet": True})                    # a resume may change the display
    assert not run.matches({**CFG, "k": 3})
    with pytest.raises(InvalidRequest, match=r"different config \(k: 2 -> 3\).*another results folder"):
        run.write_config({**CFG, "k": 3})


def test_wilson_against_hand_computed_values():
    lo, hi = wilson(8, 10)          # p = .8, z = 1.96: (0.8 + 0.192) / 1.384 -/+ 0.2266
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and round(hi, 4) == 0.1611


def test_summary_per_category_expert_and_cost():
    recs = [record(0, "STEM", True), record(1, "STEM", False, answers=("B", "A")),
            record(2, "humanities", True, answers=("A", "A")), record(3, "humanities", True, parsed=False)]
    s = summarize(recs, {"wall_s": 12.5, "config": CFG})
    assert s["n"] == 4 and s["accuracy"] == 0.75 and s["ci95"] == [round(v, 4) for v in wilson(3, 4)]
    assert s["parsed"] == 3 and s["unparsable"] == 1 and s["parsed_rate"] == 0.75
    assert s["per_category"] == {"STEM": {"n": 2, "acc": 0.5}, "humanities": {"n": 2, "acc": 1.0}}
    assert s["per_subject"]["STEM-sub"] == {"n": 2, "acc": 0.5}
    assert s["per_expert"]["a"]["acc"] == 0.75 and s["per_expert"]["b"]["per_category"]["STEM"]["acc"] == 0.5
    assert s["calls_per_question"] == 2 and s["tokens_per_question"] == 20
    assert s["latency_mean_s"] == 2.5 and s["latency_p50_s"] == 2.5
    assert s["wall_s"] == 12.5 and s["config"]["k"] == 2


def write_run(path, n=6, **cfg) -> RunDir:
    run = RunDir(path)
    run.write_config({**CFG, **cfg})
    for i in range(n):
        run.append(record(i, ("STEM", "humanities", "social")[i % 3], i % 2 == 0))
    return run


def is_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > 5000


def test_run_summary_files_and_plot(tmp_path):
    run = write_run(tmp_path / "run")
    s = run.write_summary({"model_loads": 2})
    assert s["config"]["router"] == "knn" and s["model_loads"] == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n"] == 6
    md = (tmp_path / "run" / "summary.md").read_text()
    assert "| n | accuracy % |" in md and "| STEM | 2 |" in md
    assert is_png(tmp_path / "run" / "plot_categories.png")


def test_sweep_report_and_plots(tmp_path):
    cells = [(f"knn-k{k}", write_run(tmp_path / f"knn-k{k}", n=4 + k, k=k).write_summary()) for k in (1, 2, 3)]
    cells.append(("tags-k1", write_run(tmp_path / "tags-k1", router="tags", k=1).write_summary()))
    md = write_sweep_report(cells, tmp_path)
    assert md.count("\n| knn-k") == 3 and "| tags-k1 | tags | 1 | vote |" in md
    combined = json.loads((tmp_path / "summary.json").read_text())["cells"]
    assert set(combined) == {"knn-k1", "knn-k2", "knn-k3", "tags-k1"}
    assert is_png(tmp_path / "sweep_accuracy_vs_k.png") and is_png(tmp_path / "sweep_accuracy_vs_cost.png")


def test_report_rerenders_from_saved_records(tmp_path):
    run = write_run(tmp_path / "sweep" / "knn-k2")
    run.write_summary({"wall_s": 3.0})
    write_run(tmp_path / "sweep" / "tags-k1", router="tags", k=1)          # never summarised
    for f in ("summary.md", "plot_categories.png"):
        (run.path / f).unlink()
    r = CliRunner().invoke(bench, ["report", str(run.path)])
    assert r.exit_code == 0, r.output
    assert "| n | accuracy % |" in r.output and is_png(run.path / "plot_categories.png")
    assert json.loads((run.path / "summary.json").read_text())["wall_s"] == 3.0      # runner's extra kept
    md = render(tmp_path / "sweep")
    assert "| knn-k2 | knn | 2 |" in md and "| tags-k1 | tags | 1 |" in md
    assert (tmp_path / "sweep" / "tags-k1" / "summary.json").is_file()
    assert is_png(tmp_path / "sweep" / "sweep_accuracy_vs_k.png")
    r = CliRunner().invoke(bench, ["report", str(tmp_path / "sweep" / "tags-k1" / "..")])
    assert r.exit_code == 0 and "| tags-k1 |" in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(bench, ["report", str(tmp_path / "empty")])
    assert r.exit_code == 1 and "no results.jsonl" in r.output


def test_replay_out_writes_the_results_format(tmp_path):
    q, p, m = write_replay_files(tmp_path)
    out = tmp_path / "replay"
    args = ["replay", "--train-questions", q, "--train-predictions", p, "--test-questions", q,
            "--test-predictions", p, "--models", m, "--pool", "three", "--router", "knn", "--k", "1", "--k", "2",
            "--encoder", "hashing-64", "--no-cache", "--json", tmp_path / "figures.json", "--out", out]
    r = CliRunner().invoke(bench, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    figures = json.loads((tmp_path / "figures.json").read_text())["figures"]
    cells = {d.name for d in out.iterdir() if d.is_dir()}
    assert cells == {"knn-k1", "knn-k2", "baseline-best_single", "baseline-category_best", "baseline-vote_top3",
                     "baseline-category_predicted"}
    recs = RunDir(out / "knn-k2").records()
    assert len(recs) == 7 and recs[0]["id"] == "replay/100" and recs[0]["category"] in ("math", "law")
    assert {"experts", "candidates", "final_answer", "correct", "parsed", "routing", "gold"} <= set(recs[0])
    assert all(c["text"] is None and c["answer"] in (None, *"ABCDE") for r in recs for c in r["candidates"])
    top3 = {r["id"]: {c["expert"]: c for c in r["candidates"]} for r in RunDir(out / "baseline-vote_top3").records()}
    assert top3["replay/102"]["c"]["answer"] is None and top3["replay/102"]["c"]["error"] == "no recorded answer"
    assert top3["replay/105"]["a"]["answer"] is None and top3["replay/105"]["a"]["error"] is None    # NONE
    for name, key in (("knn-k1", "knn@k1"), ("knn-k2", "knn@k2"), ("baseline-best_single", "best_single"),
                      ("baseline-vote_top3", "vote_top3")):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["accuracy"] == figures[key], name                  # same figures as the replay table
    cfg = RunDir(out / "knn-k2").config()
    assert cfg["router"] == "knn" and cfg["k"] == 2 and cfg["source"] == "replay"
    assert "| knn-k2 | knn | 2 | vote |" in (out / "summary.md").read_text()
    assert is_png(out / "sweep_accuracy_vs_k.png")
    r = CliRunner().invoke(bench, [str(a) for a in args])                # same config: rewritten, not refused
    assert r.exit_code == 0, r.output
    other = [str(a) for a in args]
    other[other.index("three")] = "two"
    r = CliRunner().invoke(bench, other)                                 # another run in the same folder
    assert r.exit_code == 1 and "different config" in r.output
