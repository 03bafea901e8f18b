"""PNG plots of benchmark summaries (matplotlib, no display: ``Figure`` + Agg canvas).

matplotlib comes with the ``bench`` extra; without it the plots are skipped with a warning.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

from .labels import system_of, top_experts

HINT = "install the bench extra for plots: pip install 'conclave[bench]'"


def _figure(width: float = 7.0, height: float = 4.2):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn(f"matplotlib is not installed: plots skipped ({HINT})", stacklevel=3)
        return None
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _err(s: Mapping) -> tuple[float, list[float]]:
    """Accuracy % and its asymmetric error bar from the 95% interval."""
    acc = 100 * (s.get("accuracy") or 0.0)
    lo, hi = (100 * v for v in s.get("ci95") or (0.0, 0.0))
    return acc, [max(acc - lo, 0.0), max(hi - acc, 0.0)]


def plot_categories(summary: Mapping, path: Path) -> Path | None:
    """Grouped bars: per category, the final answer's accuracy and each expert's own accuracy."""
    cats = list(summary.get("per_category") or {})
    fig = _figure(min(16.0, max(6.0, 0.9 * len(cats) + 3)), 4.8)
    if fig is None or not cats:
        return None
    series = {"final": {c: v["acc"] for c, v in summary["per_category"].items()}}
    for expert in top_experts(summary):
        series[expert] = {c: a["acc"] for c, a in summary["per_expert"][expert]["per_category"].items()}
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (name, accs) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(cats))]
        ax.bar(xs, [100 * (accs.get(c) or 0.0) for c in cats], width, label=name)
    tilt = len(cats) > 4
    ax.set_xticks(range(len(cats)), cats, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel("accuracy %")
    ax.set_ylim(0, 100)
    ax.set_title(f"accuracy per category (n = {summary.get('n')}): final answer and each expert's own")
    fig.legend(loc="outside right upper", fontsize="small")
    fig.savefig(path)
    return path


def _series_key(s: Mapping) -> str:
    cfg = s.get("config") or {}
    router = system_of(cfg)
    return router if cfg.get("aggregator") in (None, "vote") else f"{router} + {cfg['aggregator']}"


def plot_sweep_accuracy_vs_k(cells: Sequence[tuple[str, Mapping]], path: Path) -> Path | None:
    """One line per router (and aggregator): accuracy against k, 95% error bars."""
    fig = _figure()
    if fig is None or not cells:
        return None
    lines: dict[str, list[tuple[float, float, list[float]]]] = defaultdict(list)
    for _, s in cells:
        k = (s.get("config") or {}).get("k")
        if isinstance(k, (int, float)):
            lines[_series_key(s)].append((k, *_err(s)))
    ax = fig.add_subplot()
    for name, pts in sorted(lines.items()):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2][0] for p in pts], [p[2][1] for p in pts]],
                    marker="o", capsize=3, label=name)
    ax.set_xlabel("k (experts per question)")
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy vs k (95% Wilson intervals)")
    if lines:
        ax.legend(fontsize="small")
    fig.savefig(path)
    return path


def plot_sweep_accuracy_vs_cost(cells: Sequence[tuple[str, Mapping]], path: Path) -> Path | None:
    """Each cell a point: accuracy against tokens per question (calls when any cell lacks tokens)."""
    fig = _figure()
    if fig is None or not cells:
        return None
    use_tokens = all((s.get("tokens_per_question") or 0) > 0 for _, s in cells)
    key, label = ("tokens_per_question", "tokens per question") if use_tokens else \
        ("calls_per_question", "expert calls per question")
    groups: dict[str, list[tuple[float, float, list[float]]]] = defaultdict(list)
    for _, s in cells:
        groups[_series_key(s)].append((s.get(key) or 0.0, *_err(s)))
    ax = fig.add_subplot()
    for name, pts in sorted(groups.items()):
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2][0] for p in pts], [p[2][1] for p in pts]],
                    marker="o", linestyle="none", capsize=3, label=name)
    ax.legend(fontsize="small")
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy %")
    ax.set_title("accuracy vs cost (95% Wilson intervals)")
    fig.savefig(path)
    return path
