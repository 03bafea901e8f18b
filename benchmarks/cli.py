"""``conclave bench``: offline benchmarks on recorded answers of real LLMs.

Runnable on its own as ``python -m benchmarks.cli replay ...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from experts_registry.errors import ConclaveError
from router.replay_data import DEFAULTS

ROUTER_NAMES = ("skills", "skills-sampled", "skills-embed", "coe", "knn", "correct", "all")


def _ks(ctx, param, values) -> list[int]:
    from router.correct import parse_k

    try:
        ks = [parse_k(v) for v in values]
    except ConclaveError as exc:
        raise click.BadParameter(exc.message) from None
    if any(k > 9 for k in ks):
        raise click.BadParameter("k is at most 9")
    return ks


@click.group(name="bench")
def bench() -> None:
    """Benchmarks: live runs and sweeps through the gateway's pipeline, or replay on recorded answers."""


@bench.command()
@click.option("--train-questions", type=click.Path(dir_okay=False), default=str(DEFAULTS["questions"]),
              show_default="shipped MMLU-Pro", help="Questions to fit on (jsonl or jsonl.gz).")
@click.option("--train-predictions", type=click.Path(dir_okay=False), default=str(DEFAULTS["predictions"]),
              show_default="shipped MMLU-Pro", help="Recorded answers for them (csv or csv.gz).")
@click.option("--test-questions", type=click.Path(dir_okay=False), default=None,
              help="Held-out questions; without test files the train files are split by a seeded hash.")
@click.option("--test-predictions", type=click.Path(dir_okay=False), default=None,
              help="Recorded answers for the held-out questions.")
@click.option("--models", type=click.Path(dir_okay=False), default=str(DEFAULTS["models"]),
              show_default="shipped models.json", help="Model columns, ids, active parameters and pools.")
@click.option("--pool", default="small-17", show_default=True, help="Named pool of models.json, or 'all'.")
@click.option("--router", "routers", multiple=True, default=("all",), show_default=True,
              type=click.Choice(ROUTER_NAMES), help="Router to evaluate (repeatable, or 'all').")
@click.option("--k", "ks", multiple=True, default=("1", "3"), show_default=True, callback=_ks,
              help="Experts called per question (repeatable), or 'auto' (adaptive k: routers that support it).")
@click.option("--seed", default=0, show_default=True, help="Seed of the hash split.")
@click.option("--folds", default=0, type=click.IntRange(0, 20), show_default=True,
              help="Cross-validate: N folds of the train files (each question tested once per seed), mean ± std "
                   "and paired comparisons against the baselines. 0: one split.")
@click.option("--seeds", default=1, type=click.IntRange(1, 20), show_default=True,
              help="With --folds: repeat the fold split with this many seeds.")
@click.option("--cost-weight", "cost_weights", multiple=True, type=click.FloatRange(0), default=(),
              help="Routers that price experts (correct): also route k = 1 with this weight on active "
                   "parameters (repeatable): the accuracy vs active-parameters curve.")
@click.option("--test-fraction", default=0.2, show_default=True, help="Share of questions held out by the split.")
@click.option("--encoder", default="static-minilm-256", show_default=True,
              help="Embedding model: static-minilm-256, all-minilm-l6-v2 ('hashing-64' for a quick run).")
@click.option("--threads", type=int, default=None,
              help="torch threads for the encoder (1 is fastest on a busy 2-core machine).")
@click.option("--cache-dir", default=None, help="Embedding cache (default: ~/.cache/conclave/embeddings).")
@click.option("--no-cache", is_flag=True, help="Encode every question again.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write all figures here.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also write per-question results: one run folder per router x k and baseline, "
                   "plus the sweep report (the format of 'bench run'; see 'bench report').")
def replay(train_questions, train_predictions, test_questions, test_predictions, models, pool, routers,
           ks, seed, folds, seeds, cost_weights, test_fraction, encoder, threads, cache_dir, no_cache, json_out, out_dir) -> None:
    """Fit routers on recorded answers, route held-out questions, compare with baselines.

    Accuracy at k > 1 is the majority vote of the k chosen experts' recorded
    answers (ties go to the expert the router ranked higher).

    \b
    Example:
      conclave bench replay --pool small-17 --router knn --k 1 --k 3 --json out.json
      conclave bench replay --train-questions Q1.jsonl.gz --train-predictions P1.csv.gz \\
          --test-questions Q2.jsonl.gz --test-predictions P2.csv.gz --models models.json \\
          --pool small-17 --router all --k 1 --k 3 --json out.json
      conclave bench replay --router knn --k 1 --k 3 --out bench-results/replay-knn
      conclave bench replay --router correct --router knn --k 1 --k 3 --k auto --folds 5 --json cv.json
    """
    from router.encoder import default_cache_dir, get_encoder

    from .replay import run_replay, table
    from router.replay_data import hash_split, load_models, load_replay
    from .replay_results import ReplayRecorder

    try:
        if bool(test_questions) != bool(test_predictions):
            raise click.UsageError("give both --test-questions and --test-predictions, or neither")
        if folds and (test_questions or out_dir):
            raise click.UsageError("--folds splits the train files itself: drop --test-* and --out")
        info = load_models(models)
        train = load_replay(train_questions, train_predictions, info, pool)
        cache = None if no_cache else (cache_dir or default_cache_dir())
        enc = get_encoder(encoder, **({"threads": threads} if threads else {}))
        if folds:
            return _cross_validate(train, routers, ks, enc, cache, folds, seeds, pool, json_out, cost_weights)
        split = {"train": [train_questions, train_predictions]}
        if test_questions:
            test = load_replay(test_questions, test_predictions, info, pool)
            split["test"] = [test_questions, test_predictions]
        else:
            mask = hash_split(train.question_ids, seed, test_fraction)
            train, test = train.subset(~mask), train.subset(mask)
            split.update(hash_seed=seed, test_fraction=test_fraction)
        dataset = "mmlu-pro" if Path(train_questions).resolve() == DEFAULTS["questions"].resolve() else "replay"
        recorder = ReplayRecorder(test, dataset) if out_dir else None
        result = run_replay(train, test, routers, sorted(set(ks), key=_k_order), enc, cache, split, sink=recorder,
                            cost_weights=cost_weights)
        result["pool"] = pool
        if recorder:
            recorder.write(out_dir, {"pool": pool, "encoder": enc.name, "split": split,
                                     "n_train": len(train), "models": str(models)})
    except ConclaveError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(table(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1, sort_keys=True))
        click.echo(f"figures written to {json_out}")
    if out_dir:
        click.echo(f"per-question results written to {out_dir} (re-render: conclave bench report {out_dir})")


def _k_order(k: int) -> float:
    return float("inf") if k == 0 else k          # auto last


def _cross_validate(data, routers, ks, enc, cache, folds, seeds, pool, json_out, cost_weights=()) -> None:
    from .replay_cv import cross_validate, cv_table

    result = {**cross_validate(data, routers, sorted(set(ks), key=_k_order), enc, cache, folds, seeds,
                               cost_weights), "pool": pool}
    click.echo(cv_table(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1, sort_keys=True))
        click.echo(f"figures written to {json_out}")


@bench.command()
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
def report(results_dir) -> None:
    """Re-render summaries and plots from saved per-question results, print the table.

    RESULTS_DIR is a run folder (holding results.jsonl) or a sweep folder of runs;
    a sweep also gets the combined summary.md / summary.json and its two plots.

    \b
    Example:
      conclave bench report bench-results/RUN_FOLDER
      conclave bench report bench-results/SWEEP_FOLDER
    """
    from .results import render

    try:
        click.echo(render(results_dir))
    except ConclaveError as exc:
        raise click.ClickException(exc.message) from exc


def _register_run_commands() -> None:
    from .cli_run import run, sweep

    bench.add_command(run)
    bench.add_command(sweep)


_register_run_commands()


def main() -> None:
    bench(prog_name="python -m benchmarks.cli")


if __name__ == "__main__":
    main()
