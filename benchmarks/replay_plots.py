"""Plots of a cross-validated replay (``conclave bench replay --folds N --json FILE``).

    python -m benchmarks.replay_plots FILE [--out DIR]

writes ``accuracy_vs_calls.png`` and ``accuracy_vs_params.png``: each system's mean accuracy (error
bars: the standard deviation over the folds) against its calls, and against its active parameters,
per question.  Cost-aware points (``--cost-weight``) are joined as one curve per router.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Mapping

from .plots import _figure

AXES = {"calls": ("calls_per_question", "expert calls per question"),
        "params": ("active_params_per_question", "active parameters per question (B)")}


def plot_tradeoff(result: Mapping, axis: str, path: Path) -> Path | None:
    key, label = AXES[axis]
    fig = _figure()
    if fig is None:
        return None
    ax = fig.subplots()
    systems = result["systems"]
    curves: dict[str, list] = {}
    for name, s in systems.items():
        if "@cost" in name or "-cost" in name:
            base = re.sub(r"-cost[0-9.]+", "", name)
            weight = float(re.search(r"-cost([0-9.]+)", name).group(1))
            curves.setdefault(base, []).append((s[key], 100 * s["accuracy"], weight))
            continue
        if name == "baseline:oracle":
            continue
        marker = "s" if name.startswith("baseline:") else "o"
        ax.errorbar(s[key], 100 * s["accuracy"], yerr=100 * s["accuracy_std"], fmt=marker, capsize=3)
        ax.annotate(name.replace("baseline:", ""), (s[key], 100 * s["accuracy"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    for base, points in curves.items():
        xs, ys, ws = zip(*sorted(points))
        ax.plot(xs, ys, "-", marker=".", label=f"{base} priced by active parameters, weight {min(ws):g}-{max(ws):g}")
    if curves:
        ax.legend(fontsize=7)
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy % (mean ± std over folds)")
    ax.set_title(f"replay, {result['folds']}-fold CV, {result['n']} questions, {len(result['experts'])} experts",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", help="the --json output of 'conclave bench replay --folds N'")
    ap.add_argument("--out", default=".", help="folder for the PNG files")
    args = ap.parse_args(argv)
    result = json.loads(Path(args.file).read_text())
    if "systems" not in result:
        raise SystemExit(f"{args.file} is not a cross-validated replay (run bench replay with --folds)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for axis in AXES:
        path = plot_tradeoff(result, axis, out / f"accuracy_vs_{axis}.png")
        if path:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
