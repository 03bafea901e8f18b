"""``conclave bench replay --out DIR``: replay figures in the live results format.

Every router at every k, and every baseline, becomes a run folder (config.json,
results.jsonl, summary, plot) whose records hold the experts called, their recorded
answers and the vote, so replayed and live runs compare in one ``bench report`` table.
Recorded answers carry no text, tokens or latency (null in the records).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from router.correct import AUTO
from router.evaluation import decision_answers
from router.replay_data import NO_RECORD, ReplaySet
from router.vote import LETTERS, vote

from .results import RESULTS, RunDir, write_sweep_report

# Baselines as sweep cells: best single + top-k votes form one "top-k on train" line over k.
BASELINE_ROUTERS = {"best_single": "baseline:top-k", "vote_top3": "baseline:top-k",
                    "vote_top5": "baseline:top-k", "category_best": "baseline:category-best"}


def _letter(a: int) -> str | None:
    return LETTERS[a] if a >= 0 else None


class ReplayRecorder:
    """A ``run_replay`` sink: keeps each cell's per-question records, then writes the folders."""

    def __init__(self, test: ReplaySet, dataset: str):
        self.test, self.dataset = test, dataset
        self.cells: dict[str, tuple[dict, list[dict]]] = {}

    def __call__(self, name: str, k: int, cols: np.ndarray, decisions: list | None) -> None:
        baseline = decisions is None
        cell = f"baseline-{name}" if baseline else f"{name}-k{'auto' if k == AUTO else k}"
        router = BASELINE_ROUTERS.get(name, f"baseline:{name}") if baseline else name
        records = [self._record(i, cols[i], None if baseline else decisions[i], router)
                   for i in range(len(self.test))]
        experts = sorted({e for r in records for e in r["experts"]}) if baseline else list(self.test.experts)
        self.cells[cell] = ({"router": router, "k": int(k), "aggregator": "vote", "experts": experts}, records)

    def _record(self, i: int, cols: np.ndarray, decision, router: str) -> dict:
        t = self.test
        if decision is not None:             # the decision's own vote (weights, adaptive k)
            answer, called = decision_answers(decision, t.experts, t.answers[i])
            cols = np.array(called)
        else:
            answer = int(vote(t.answers[i, cols]))
        final, gold = _letter(answer), LETTERS[int(t.gold[i])]
        experts = list(dict.fromkeys(t.experts[c] for c in cols))
        candidates = [{"expert": t.experts[c], "answer": _letter(int(t.answers[i, c])), "text": None,
                       "tokens": None, "latency_s": None,
                       "error": "no recorded answer" if t.answers[i, c] == NO_RECORD else None}
                      for c in dict.fromkeys(cols.tolist())]
        category = t.labels.get("category", ("",) * len(t))[i]
        routing = decision.to_dict() if decision is not None else {"router": router, "reason": "fixed on train"}
        routing.pop("experts", None)
        return {"id": f"{self.dataset}/{t.question_ids[i]}", "dataset": self.dataset,
                "subject": t.labels.get("subject", (None,) * len(t))[i] or category, "category": category,
                "gold": gold, "experts": experts, "candidates": candidates, "final_answer": final,
                "correct": final == gold, "parsed": final is not None, "tokens": None, "calls": len(experts),
                "latency_s": None, "routing": routing, "aggregator": "vote"}

    def write(self, out_dir: str | os.PathLike, base_config: Mapping) -> str:
        """One run folder per cell (refusing folders of a different run), then the sweep report."""
        out = Path(out_dir)
        runs = []
        for name, (cfg, records) in self.cells.items():
            config = {**base_config, **cfg, "source": "replay", "dataset": self.dataset}
            RunDir(out / name).check_config(config)          # refuse before overwriting anything
            runs.append((name, config, records))
        cells = []
        for name, config, records in runs:
            run = RunDir(out / name)
            run.write_config(config)
            write_records(run, records)
            cells.append((name, run.write_summary({"source": "replay"})))
        return write_sweep_report(cells, out)


def write_records(run: RunDir, records: Sequence[Mapping]) -> None:
    """Replace a run's records at once (a replay is recomputed whole, never resumed)."""
    text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records)
    tmp = run.path / f".{RESULTS}.{os.getpid()}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, run.path / RESULTS)
