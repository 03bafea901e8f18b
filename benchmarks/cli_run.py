"""``conclave bench run`` and ``conclave bench sweep``: live benchmark runs through the gateway's pipeline."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import click

from experts_registry.errors import ConclaveError

DATASET_NAMES = ("mmlu", "mmlu-pro", "gpqa", "medmcqa")
RESULTS_ROOT = Path("bench-results")


class _NoBar:
    def reset(self, total=None) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool | None, unit: str):
    """A tqdm bar with rate and ETA on stderr (default: when stderr is a terminal), or a no-op."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=0, unit=unit, file=sys.stderr, dynamic_ncols=True, smoothing=0.05)


def _settings(home: str | None):
    from service.core.config import load_settings

    settings = load_settings()
    return settings.with_(home=Path(home).expanduser()) if home else settings


def _interrupted(counts: tuple[int, int] | None) -> None:
    done = f" {counts[0]}/{counts[1]} done," if counts else ""
    click.echo(f"interrupted:{done} rerun the same command to resume", err=True)
    sys.exit(130)


def _echo_result(summary: dict, out: Path) -> None:
    lo, hi = summary["ci95"]
    acc = summary["accuracy"]
    acc_text = "-" if acc is None else f"{100 * acc:.1f}%"
    click.echo(f"{summary['n']} questions: accuracy {acc_text} (95% CI {100 * lo:.1f}-{100 * hi:.1f}), "
               f"{summary['unparsable']} unparsable; results in {out}")


def _run_config(dataset, subset, limit, seed, shots, cot, max_tokens, temperature, router, k, aggregator,
                experts, via, settings):
    from .runner import RunConfig

    names = tuple(n.strip() for n in (experts or "").split(",") if n.strip())
    if router is None and not (len(names) == 1 and k == 1):
        router = settings.router                     # routed: CONCLAVE_ROUTER unless --router
    cot = (shots == 0) if cot is None else cot
    return RunConfig(dataset=dataset, subset=subset, limit=limit, seed=seed, shots=shots, cot=cot,
                     max_tokens=max_tokens or (256 if cot else 16), temperature=temperature, router=router,
                     k=k, aggregator=(aggregator or "vote") if k > 1 else None, experts=names, via=via)


@click.command("run")
@click.option("--dataset", required=True, type=click.Choice(DATASET_NAMES), help="Benchmark to run.")
@click.option("--subset", default=None, help="One subject or category (e.g. STEM, college_physics).")
@click.option("--limit", type=click.IntRange(1), default=None, help="A seeded sample of N questions.")
@click.option("--seed", default=0, show_default=True, help="Seed of the sample.")
@click.option("--router", default=None, help="Route with this router (default: CONCLAVE_ROUTER, unless "
              "--experts names exactly one expert and k = 1: then that expert is asked by name).")
@click.option("--k", default=1, show_default=True, type=click.IntRange(1, 16), help="Experts asked per question.")
@click.option("--aggregator", default=None, help="k > 1: vote (default), synthesis or first.")
@click.option("--experts", default=None, help="Comma-separated: the router's candidates, or one expert to ask.")
@click.option("--shots", default=0, show_default=True, type=click.IntRange(0, 10),
              help="Solved exemplars before the question (MMLU: the subject's dev questions).")
@click.option("--cot/--no-cot", default=None, help="Ask for step-by-step reasoning (default: only when --shots 0).")
@click.option("--max-tokens", type=click.IntRange(1), default=None,
              help="Tokens per answer (default: 256 with --cot, 16 without).")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 2))
@click.option("--url", default=None, help="Ask a running gateway (http://host:8000) instead of running in process.")
@click.option("--api-key", default=None, help="Key for --url (default: $CONCLAVE_API_KEY); never printed.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Requests in flight (--url, remote experts).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results folder (default: bench-results/<dataset>-<router|expert>-k<k>-<aggregator>-<hash>).")
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="CONCLAVE_HOME to use (registry, trained routers); default: $CONCLAVE_HOME.")
@click.option("--progress/--quiet", default=None, help="Progress bar with rate and ETA (default: on a terminal).")
def run(dataset, subset, limit, seed, router, k, aggregator, experts, shots, cot, max_tokens, temperature, url,
        api_key, concurrency, out, home, progress):
    """Run benchmark questions through the gateway's pipeline and score them.

    In process by default (the same routing and aggregation code as the server, the
    offline batch schedule: each local expert loaded once), or against a running
    gateway with --url. Rerunning the same command resumes: answered questions and
    generated answers are skipped. Ctrl-C keeps everything finished (exit 130).

    \b
    Examples:
      conclave bench run --dataset mmlu --limit 50 --shots 5 --experts smollm2
      conclave bench run --dataset mmlu --limit 50 --shots 5 --router tags --k 3 --aggregator vote
      conclave bench run --dataset gpqa --limit 20 --url http://127.0.0.1:8000 --k 3 --quiet
    """
    bar, seen = progress_bar(progress, "q" if url else "call"), {}
    with _handled(bar, lambda: _count(seen.get("folder"), seen.get("cfg"))):
        settings = _settings(home)
        cfg = seen["cfg"] = _run_config(dataset, subset, limit, seed, shots, cot, max_tokens, temperature, router, k,
                                        aggregator, experts, "http" if url else "in-process", settings)
        if url:
            if cfg.router and cfg.experts:
                raise click.UsageError("--experts cannot restrict a routed run over --url: use an API key "
                                       "limited to those experts ('conclave keys create NAME --models a,b')")
            from .remote import run_http

            folder = seen["folder"] = out or RESULTS_ROOT / cfg.label()
            key = api_key or os.environ.get("CONCLAVE_API_KEY") or None
            summary = run_http(cfg, folder, url, key, concurrency, bar)
        else:
            from .runner import local_gateway, registry_digest

            gw = local_gateway(settings)
            cfg = seen["cfg"] = cfg.with_(registry=registry_digest(gw.store, cfg.experts, settings.generalist))
            folder = seen["folder"] = out or RESULTS_ROOT / cfg.label()
            summary = _run_local(cfg, folder, gw, concurrency, bar)
    _echo_result(summary, folder)


@contextmanager
def _handled(bar, count: Callable[[], tuple[int, int] | None] = lambda: None) -> Iterator[None]:
    """Conclave errors -> a one-line message and exit 1; Ctrl-C -> "interrupted: N/M done" and exit 130."""
    from .generate import Interrupted

    try:
        yield
    except ConclaveError as exc:
        raise click.ClickException(exc.message) from None
    except Interrupted as exc:
        _interrupted((exc.done, exc.total))
    except KeyboardInterrupt:   # outside generation (routing, loading): count what is on disk
        _interrupted(count())
    finally:
        bar.close()


def _count(folder: Path | None, cfg) -> tuple[int, int] | None:
    from .datasets import load_questions
    from .results import RunDir

    if folder is None or cfg is None:
        return None
    return len(RunDir(folder).done_ids()), len(load_questions(cfg.dataset, cfg.subset, cfg.limit, cfg.seed))


def _run_local(cfg, folder: Path, gw, concurrency: int, bar) -> dict:
    from .generate import AnswerCache, Generator
    from .runner import Cell, run_cells

    gen = Generator(gw, AnswerCache(folder / "candidates.jsonl"), concurrency=concurrency)
    (summary,) = run_cells([Cell(folder.name, cfg, folder, gw)], gen, bar)
    return summary


@click.command("sweep")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Sweep folder (default: the file's 'out:', else bench-results/<name>).")
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="CONCLAVE_HOME to use and register the sweep's extra experts in (default: $CONCLAVE_HOME, "
                   "or <sweep folder>/home when the file lists extra experts: never your registry).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256),
              help="Remote expert calls in flight.")
@click.option("--progress/--quiet", default=None, help="Progress bar with rate and ETA (default: on a terminal).")
def sweep(config, out, home, concurrency, progress):
    """Run a grid of benchmark runs (routers x k x aggregators x expert sets, plus single experts).

    One results folder per cell and a combined summary.md / summary.json with plots in
    the sweep folder. Cells share generation: each (expert, question) answer is made once
    for all cells, so each local expert is loaded about once. Rerun to resume.

    \b
    Example:
      conclave bench sweep benchmarks/sweeps/mmlu-small.yaml --quiet
    """
    from .generate import AnswerCache, Generator
    from .sweep import load_spec, run_sweep

    bar = progress_bar(progress, "call")
    with _handled(bar):
        spec = load_spec(config)
        folder = out or Path(spec.out or RESULTS_ROOT / spec.name)
        gw = _sweep_gateway(spec, folder, home)
        gen = Generator(gw, AnswerCache(folder / "candidates.jsonl"), concurrency=concurrency)
        table = run_sweep(spec, folder, gw, gen, bar)
    click.echo(table)
    click.echo(f"loads: {gen.stats['loads']} ({gen.stats['loads_by_expert']}), generation "
               f"{gen.stats['generate_seconds']:.0f} s; results in {folder}", err=True)


def _sweep_gateway(spec, folder: Path, home: str | None):
    """The gateway of a sweep: the user's, or one on the sweep's own registry when it adds experts."""
    from experts_registry import offer_bundled, open_store

    from .runner import local_gateway
    from .sweep import link_models, register_experts

    settings = _settings(home)
    if spec.experts and home is None:
        user_home = settings.home
        settings = settings.with_(home=(folder / "home").resolve(), redis_url=None)
        link_models(user_home, settings.home)
    if not spec.experts:
        return local_gateway(settings)
    store = open_store(settings.home, settings.redis_url, settings.redis_prefix)
    offer_bundled(store)
    register_experts(store, spec.experts)
    return local_gateway(settings, store)
