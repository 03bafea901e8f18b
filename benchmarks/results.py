"""Benchmark results on disk: one folder per run, one combined report per sweep.

    RUN/config.json        the resolved config (a rerun with the same config resumes)
    RUN/results.jsonl      one record per answered question, appended and fsynced line by line
    RUN/summary.json       accuracy with a 95% Wilson interval, per subject / category / expert, cost
    RUN/summary.md         the same as Markdown tables
    RUN/plot_categories.png
    SWEEP/summary.{json,md}, sweep_accuracy_vs_k.png, sweep_accuracy_vs_cost.png

A record: ``id, dataset, subject, category, gold, experts, candidates ({expert, answer,
text, tokens, latency_s, error}), final_answer, correct, parsed, tokens, calls,
latency_s, routing ({router, reason, scores...}), aggregator``.  A torn last line (the
run was killed mid-write) is ignored on read and cut off before the next append.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from experts_registry.errors import InvalidRequest, ValidationFailed

from .labels import system_of, top_experts

CONFIG, RESULTS, SUMMARY_JSON, SUMMARY_MD = "config.json", "results.jsonl", "summary.json", "summary.md"
# Config keys that do not change what a run measures: a rerun may differ in them and still resume.
NON_IDENTITY_KEYS = frozenset({"quiet", "progress", "verbose", "out", "resume", "concurrency", "workers"})
COMPUTED_KEYS = frozenset({"n", "correct", "accuracy", "ci95", "parsed", "parsed_rate", "unparsable",
                           "per_subject", "per_category", "per_expert", "calls_per_question",
                           "tokens_per_question", "latency_mean_s", "latency_p50_s", "config"})


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def identity(cfg: Mapping) -> dict:
    """The part of a config that defines what a run measures."""
    return {k: v for k, v in _jsonable(dict(cfg)).items() if k not in NON_IDENTITY_KEYS and not k.startswith("_")}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class RunDir:
    """One run's folder: config, records, summary."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._repaired = False

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    # ---- config ------------------------------------------------------------------------------
    def config(self) -> dict | None:
        p = self.path / CONFIG
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValidationFailed(f"{p} is not valid JSON ({exc}): fix or delete it") from exc

    def matches(self, cfg: Mapping) -> bool:
        """True when the folder holds no config yet, or one equal to ``cfg`` up to non-identity keys."""
        saved = self.config()
        return saved is None or identity(saved) == identity(cfg)

    def check_config(self, cfg: Mapping) -> None:
        if self.matches(cfg):
            return
        saved, new = identity(self.config() or {}), identity(cfg)
        diff = sorted(k for k in saved.keys() | new.keys() if saved.get(k) != new.get(k))
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
        raise InvalidRequest(f"{self.path} holds a run with a different config ({shown}): "
                             "rerun with the same settings to resume, or choose another results folder",
                             param="out")

    def write_config(self, cfg: Mapping) -> None:
        """Save the resolved config; refuses (InvalidRequest) a folder holding a different run."""
        self.check_config(cfg)
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path / CONFIG, json.dumps(_jsonable(dict(cfg)), indent=1, sort_keys=True) + "\n")

    # ---- records -----------------------------------------------------------------------------
    def append(self, record: Mapping) -> None:
        """Append one record as one line, flushed and fsynced (Ctrl-C leaves a readable file)."""
        if "id" not in record:
            raise InvalidRequest("a result record needs an 'id'")
        line = json.dumps(_jsonable(dict(record)), ensure_ascii=False) + "\n"
        with self._lock:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self._repaired:
                self._cut_torn_tail()
                self._repaired = True
            with open(self.results_path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def _cut_torn_tail(self) -> None:
        p = self.results_path
        if not p.is_file() or p.stat().st_size == 0:
            return
        with open(p, "rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def records(self) -> list[dict]:
        """Saved records, one per question id (a later record of the same id wins)."""
        p = self.results_path
        if not p.is_file():
            return []
        lines = p.read_text(encoding="utf-8").split("\n")
        by_id: dict[str, dict] = {}
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                if i == len(lines):                  # torn last line: the run was interrupted
                    break
                raise ValidationFailed(f"{p}:{i} is not a JSON record ({exc}): fix or delete that line") from exc
            if not isinstance(rec, dict) or "id" not in rec:
                raise ValidationFailed(f"{p}:{i} is not a result record (no 'id'): fix or delete that line")
            by_id[str(rec["id"])] = rec
        return list(by_id.values())

    def done_ids(self) -> set[str]:
        return {str(r["id"]) for r in self.records()}

    # ---- summary -----------------------------------------------------------------------------
    def write_summary(self, extra: Mapping | None = None) -> dict:
        """Compute and write summary.json, summary.md and the per-category plot; return the summary."""
        extra = dict(extra or {})
        extra.setdefault("config", self.config() or {})
        summary = summarize(self.records(), extra)
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path / SUMMARY_JSON, json.dumps(_jsonable(summary), indent=1, sort_keys=True) + "\n")
        _write_atomic(self.path / SUMMARY_MD, summary_markdown(summary, self.path.name))
        from .plots import plot_categories

        plot_categories(summary, self.path / "plot_categories.png")
        return summary


# ---- statistics ----------------------------------------------------------------------------------

def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``correct / n``; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _acc(right: int, n: int) -> dict:
    return {"n": n, "acc": round(right / n, 4) if n else None}


def _grouped(pairs: Iterable[tuple[str, bool]]) -> dict[str, dict]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, ok in pairs:
        counts[key][0] += bool(ok)
        counts[key][1] += 1
    return {k: _acc(r, n) for k, (r, n) in sorted(counts.items())}


def _per_expert(records: Sequence[Mapping]) -> dict[str, dict]:
    rows = [(c["expert"], r.get("category") or "", c.get("answer") is not None and c.get("answer") == r.get("gold"),
             bool(c.get("error"))) for r in records for c in r.get("candidates") or []]
    out = {}
    for expert in sorted({e for e, *_ in rows}):
        mine = [(cat, ok, err) for e, cat, ok, err in rows if e == expert]
        out[expert] = {**_acc(sum(ok for _, ok, _ in mine), len(mine)),
                       "errors": sum(err for *_, err in mine),
                       "per_category": _grouped((cat, ok) for cat, ok, _ in mine)}
    return out


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def summarize(records: Sequence[Mapping], extra: Mapping | None = None) -> dict:
    """Accuracy (95% Wilson interval), parse rate, per-subject / per-category / per-expert
    accuracy, calls, tokens and latency per question; ``extra`` keys are added as given."""
    n = len(records)
    right = sum(bool(r.get("correct")) for r in records)
    parsed = sum(bool(r.get("parsed")) for r in records)
    lo, hi = wilson(right, n)
    tokens = [r["tokens"] for r in records if r.get("tokens") is not None]
    latency = [r["latency_s"] for r in records if r.get("latency_s") is not None]
    summary = {
        "n": n, "correct": right, "accuracy": round(right / n, 4) if n else None,
        "ci95": [round(lo, 4), round(hi, 4)],
        "parsed": parsed, "parsed_rate": round(parsed / n, 4) if n else None, "unparsable": n - parsed,
        "per_subject": _grouped((r.get("subject") or "", r.get("correct")) for r in records),
        "per_category": _grouped((r.get("category") or "", r.get("correct")) for r in records),
        "per_expert": _per_expert(records),
        "calls_per_question": _mean([r["calls"] if r.get("calls") is not None else len(r.get("candidates") or [])
                                     for r in records]),
        "tokens_per_question": _mean(tokens),
        "latency_mean_s": _mean(latency),
        "latency_p50_s": round(statistics.median(latency), 4) if latency else None,
    }
    summary.update(dict(extra or {}))
    summary.setdefault("config", {})
    return summary


# ---- Markdown ------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def _config_line(cfg: Mapping) -> str:
    keys = ("dataset", "subset", "router", "k", "aggregator", "experts", "shots", "cot", "limit", "source")
    def show(v: Any) -> str:
        return f"{len(v)} experts" if isinstance(v, list) and len(v) > 4 else str(v)

    return ", ".join(f"{k}={show(cfg[k])}" for k in keys if cfg.get(k) not in (None, "", []))


def summary_markdown(summary: Mapping, title: str = "run") -> str:
    s = summary
    lines = [f"# {title}", "", _config_line(s.get("config") or {}), ""]
    lines += _table(["n", "accuracy %", "95% CI %", "parsed %", "calls/q", "tokens/q", "latency mean / p50 s"],
                    [[s["n"], _pct(s["accuracy"]), f"{_pct(s['ci95'][0])}-{_pct(s['ci95'][1])}",
                      _pct(s["parsed_rate"]), _num(s["calls_per_question"]), _num(s["tokens_per_question"]),
                      f"{_num(s['latency_mean_s'])} / {_num(s['latency_p50_s'])}"]])
    experts = top_experts(s)
    if s.get("per_category"):
        lines += ["", "## Per category (final answer, then each expert's own answers)", ""]
        lines += _table(["category", "n", "final %", *experts],
                        [[c, v["n"], _pct(v["acc"]),
                          *[_pct(s["per_expert"][e]["per_category"].get(c, {}).get("acc")) for e in experts]]
                         for c, v in s["per_category"].items()])
    if s.get("per_subject") and set(s["per_subject"]) != set(s.get("per_category") or {}):
        lines += ["", "## Per subject", ""]
        lines += _table(["subject", "n", "accuracy %"],
                        [[k, v["n"], _pct(v["acc"])] for k, v in s["per_subject"].items()])
    return "\n".join(lines) + "\n"


def sweep_rows(cells: Sequence[tuple[str, Mapping]]) -> list[list]:
    rows = []
    for name, s in cells:
        cfg = s.get("config") or {}
        rows.append([name, system_of(cfg), cfg.get("k") or "-", cfg.get("aggregator") or "-", s["n"],
                     _pct(s["accuracy"]), f"{_pct(s['ci95'][0])}-{_pct(s['ci95'][1])}",
                     _num(s["calls_per_question"]), _num(s["tokens_per_question"]), _num(s["latency_p50_s"])])
    return rows


def sweep_markdown(cells: Sequence[tuple[str, Mapping]], title: str = "sweep") -> str:
    header = ["cell", "router", "k", "aggregator", "n", "accuracy %", "95% CI %", "calls/q", "tokens/q",
              "p50 latency s"]
    return "\n".join([f"# {title}", "", *_table(header, sweep_rows(cells))]) + "\n"


def write_sweep_report(cells: Sequence[tuple[str, Mapping]], out_dir: str | os.PathLike) -> str:
    """Combined summary.md / summary.json and the two sweep plots of ``(cell name, summary)`` pairs;
    returns the Markdown."""
    from .plots import plot_sweep_accuracy_vs_cost, plot_sweep_accuracy_vs_k

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = sweep_markdown(cells, out.name)
    _write_atomic(out / SUMMARY_MD, text)
    _write_atomic(out / SUMMARY_JSON, json.dumps(_jsonable({"cells": dict(cells)}), indent=1, sort_keys=True) + "\n")
    plot_sweep_accuracy_vs_k(cells, out / "sweep_accuracy_vs_k.png")
    plot_sweep_accuracy_vs_cost(cells, out / "sweep_accuracy_vs_cost.png")
    return text


# ---- re-rendering (conclave bench report) --------------------------------------------------------

def rerender_run(path: str | os.PathLike) -> dict:
    """Summary, Markdown and plots again from the saved records, keeping the runner's extra keys."""
    run = RunDir(path)
    old = run.path / SUMMARY_JSON
    extra = {}
    if old.is_file():
        extra = {k: v for k, v in json.loads(old.read_text(encoding="utf-8")).items() if k not in COMPUTED_KEYS}
    return run.write_summary(extra)


def render(results_dir: str | os.PathLike) -> str:
    """Re-render a run folder, or every run under a sweep folder and the sweep report; the Markdown."""
    root = Path(results_dir)
    if (root / RESULTS).is_file():
        return summary_markdown(rerender_run(root), root.name)
    runs = sorted((p for p in root.iterdir() if (p / RESULTS).is_file()), key=lambda p: p.name) \
        if root.is_dir() else []
    if not runs:
        raise InvalidRequest(f"no {RESULTS} in {root} nor in its subfolders: give a run or sweep folder "
                             "written by 'conclave bench run', 'bench sweep' or 'bench replay --out'")
    return write_sweep_report([(p.name, rerender_run(p)) for p in runs], root)
