"""``conclave bench sweep CONFIG.yaml``: a grid of runs (routers x k x aggregators x expert sets,
plus single-expert baselines) that share one generation.

    dataset: mmlu            # + subset, limit, seed, shots, cot, max_tokens, temperature (as bench run)
    singles: [smollm2]       # one cell per expert, asked by name
    routers: [tags]
    ks: [1, 3]               # k = 1 cells take no aggregator (only the first is used)
    aggregators: [vote]
    expert_sets: [all]       # each "all" or a list of expert names (a router's candidates)
    experts:                 # optional extra experts, registered in the sweep's own CONCLAVE_HOME
      - {name: smol-stem, like: smollm2, system_prompt: "...", skills: [physics, ...]}

Every cell is a run folder under the sweep folder (resumable like ``bench run``); all cells'
calls go through one :class:`~benchmarks.generate.Generator` with one answer file,
``<sweep>/candidates.jsonl``, so an (expert, question) answer is generated once for every cell
and each local expert is loaded about once for the whole sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from experts_registry.errors import ConclaveError, InvalidRequest, ValidationFailed
from experts_registry.model import Expert

RUN_KEYS = ("dataset", "subset", "limit", "seed", "shots", "cot", "max_tokens", "temperature")
GRID_KEYS = ("singles", "routers", "ks", "aggregators", "expert_sets", "experts", "name", "out")


@dataclass
class SweepSpec:
    name: str
    run: dict                                   # RunConfig fields shared by every cell
    singles: list[str] = field(default_factory=list)
    routers: list[str] = field(default_factory=list)
    ks: list[int] = field(default_factory=lambda: [1])
    aggregators: list[str] = field(default_factory=lambda: ["vote"])
    expert_sets: list[tuple[str, ...]] = field(default_factory=lambda: [()])   # () = every expert
    experts: list[dict] = field(default_factory=list)
    out: str | None = None


def load_spec(path: str | Path) -> SweepSpec:
    """Parse and check a sweep YAML file (unknown keys are errors, not silently ignored)."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"cannot read the sweep file {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationFailed(f"{path} must be a YAML mapping (dataset:, routers:, ks:, ...)")
    unknown = sorted(set(doc) - set(RUN_KEYS) - set(GRID_KEYS))
    if unknown:
        raise ValidationFailed(f"{path}: unknown key(s) {', '.join(unknown)}; known: "
                               f"{', '.join(RUN_KEYS + GRID_KEYS)}", param=unknown[0])
    if "dataset" not in doc:
        raise ValidationFailed(f"{path}: 'dataset' is required (mmlu, mmlu-pro, gpqa, medmcqa)", param="dataset")
    spec = SweepSpec(name=str(doc.get("name") or path.stem), run={k: doc[k] for k in RUN_KEYS if k in doc},
                     singles=_names(doc.get("singles") or []), routers=_names(doc.get("routers") or []),
                     ks=[int(k) for k in doc.get("ks") or [1]], aggregators=_names(doc.get("aggregators") or ["vote"]),
                     expert_sets=[_expert_set(s) for s in doc.get("expert_sets") or ["all"]],
                     experts=list(doc.get("experts") or []), out=doc.get("out"))
    if not spec.singles and not spec.routers:
        raise ValidationFailed(f"{path}: nothing to run: list 'singles' and/or 'routers'")
    return spec


def _names(value) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _expert_set(value) -> tuple[str, ...]:
    return () if value in ("all", None) else tuple(_names(value))


def _set_label(names: tuple[str, ...]) -> str:
    return "all" if not names else "+".join(names)


def expand(spec: SweepSpec) -> list[tuple[str, dict]]:
    """``[(cell name, RunConfig fields)]``: the singles, then the grid (k = 1 takes no aggregator)."""
    cells = [(f"single-{e}", {**spec.run, "experts": (e,)}) for e in spec.singles]
    label_sets = len(spec.expert_sets) > 1 or spec.expert_sets != [()]
    for router in spec.routers:
        for names in spec.expert_sets:
            for k in spec.ks:
                for agg in (spec.aggregators[:1] if k == 1 else spec.aggregators):
                    name = f"{router}-k{k}" + (f"-{agg}" if k > 1 else "")
                    name += f"-{_set_label(names)}" if label_sets else ""
                    cells.append((name, {**spec.run, "router": router, "k": k,
                                         "aggregator": agg if k > 1 else None, "experts": names}))
    return cells


def register_experts(store, entries: list[dict]) -> list[str]:
    """Register the sweep's extra experts (``like: NAME`` copies a registered expert's record)."""
    names = []
    for entry in entries:
        data = dict(entry)
        like = data.pop("like", None)
        if like:
            data = {**store.get(str(like)).to_dict(), "description": f"{like} variant for a sweep", **data}
        try:
            expert = Expert.from_dict(data)
        except (ConclaveError, TypeError) as exc:
            raise ValidationFailed(f"sweep expert {entry.get('name')!r}: {getattr(exc, 'message', exc)}") from None
        store.add(expert, replace=True)
        names.append(expert.name)
    return names


def link_models(src_home: Path, home: Path) -> None:
    """Reuse the assembled bundled weights of ``src_home`` (read only) instead of assembling them again."""
    src, dest = Path(src_home) / "models", Path(home) / "models"
    if not src.is_dir() or src.resolve() == dest.resolve():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.gguf"):
        if not (dest / f.name).exists():
            (dest / f.name).symlink_to(f.resolve())


def run_sweep(spec: SweepSpec, out: Path, gateway, gen, progress=None) -> str:
    """Every cell of the grid in its own folder under ``out``, one shared generation; the report."""
    from .results import write_sweep_report
    from .runner import Cell, RunConfig, run_cells, registry_digest

    cells = []
    for name, fields in expand(spec):
        cfg = RunConfig(**fields)
        cfg = cfg.with_(registry=registry_digest(gateway.store, cfg.experts, gateway.settings.generalist))
        cells.append(Cell(name, cfg, Path(out) / name, gateway))
    summaries = run_cells(cells, gen, progress)
    return write_sweep_report([(c.name, s) for c, s in zip(cells, summaries)], out)
