"""How a run is named in tables and plots: shared by ``results`` (Markdown) and ``plots`` (PNG),
so that plots need not import results, which draws its plots through them (no cycle)."""

from __future__ import annotations

from typing import Mapping


def top_experts(summary: Mapping, most: int = 8) -> list[str]:
    """The experts answering most often (all of them when few), for tables and plots."""
    per = summary.get("per_expert") or {}
    return sorted(per, key=lambda e: (-per[e]["n"], e))[:most]


def system_of(cfg: Mapping) -> str:
    """The router, or ``expert:NAME`` for a run that asks one expert by name."""
    if cfg.get("router"):
        return str(cfg["router"])
    experts = cfg.get("experts") or []
    return f"expert:{experts[0]}" if len(experts) == 1 else "-"
