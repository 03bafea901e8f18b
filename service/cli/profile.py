"""``conclave profile ...``: build the profiles routers and aggregators use."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from .context import Context, Group, pass_ctx


@click.group(cls=Group)
def profile():
    """Build expert profiles from validation questions (live, or from recorded answers).

    \b
    Examples:
      conclave profile aggregators --n 12          # who synthesises best, live
    """


@profile.command("aggregators")
@click.option("--experts", default=None, help="Comma-separated experts to score (default: all registered).")
@click.option("--n", "n_tasks", default=12, show_default=True, type=click.IntRange(1),
              help="Validation questions (MMLU dev) to use.")
@click.option("--seed", default=0, show_default=True, help="Seed for drawing and shuffling the candidates.")
@click.option("--max-tokens", default=96, show_default=True, type=click.IntRange(1))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the profile (default: $CONCLAVE_HOME/aggregator_profile.json, "
                   "which the gateway reads).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@pass_ctx
def aggregators(ctx: Context, experts, n_tasks, seed, max_tokens, out, as_json):
    """Score each expert's ability to aggregate, live, as Symbolic-MoE does.

    Each expert gets validation questions with three shuffled candidate answers
    (1 right, 2 wrong) in the synthesis prompt; its accuracy at ending on the
    right letter is its aggregation score. The best becomes the default
    aggregator of the 'synthesis' aggregator. Each expert is loaded once and
    answers all its tasks in a row.

    \b
    Example:
      conclave profile aggregators --n 20 --experts smollm2,gemma-3-270m
    """
    from aggregators.profile import build_profile, build_tasks, read_records, save_profile, score_outputs

    from ..backends import GenParams
    from ..pipeline.aggregator_profile import profile_path

    names = _expert_names(ctx, experts)
    tasks = build_tasks(read_records(), n=n_tasks, seed=seed)
    gw = ctx.gateway()
    params = GenParams(max_tokens=max_tokens, temperature=0.0, seed=seed)
    outputs = asyncio.run(_answer_all(gw, names, tasks, params))
    scores = score_outputs(tasks, outputs)
    doc = build_profile(scores, built_from={"data": "mmlu dev", "n": len(tasks), "seed": seed,
                                            "candidates": "synthetic chains, 1 right + 2 wrong"})
    path = save_profile(doc, out or profile_path(ctx.settings.home))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for name, s in sorted(scores.items(), key=lambda kv: -kv[1]["accuracy"]):
        click.echo(f"{name:24} accuracy {s['accuracy']:.2f} on {s['n']} tasks "
                   f"({s['failed']} failed, {s['unparsed']} unparsable)")
    click.echo(f"best aggregator: {doc['best']}; profile written to {path}")


def _expert_names(ctx: Context, experts: str | None) -> list[str]:
    registered = [e.name for e in ctx.store.list()]
    if not experts:
        return registered
    names = [n.strip() for n in experts.split(",") if n.strip()]
    for name in names:
        ctx.store.get(name)  # ExpertNotFound says what to do
    return names


async def _answer_all(gw, names, tasks, params) -> dict[str, dict[str, str | None]]:
    """Expert by expert (each loaded once), every task; a failed call is recorded as None."""
    from experts_registry.errors import ConclaveError

    from ..backends import collect

    outputs: dict[str, dict[str, str | None]] = {}
    try:
        for name in names:
            expert = gw.store.get(name)
            answers: dict[str, str | None] = {}
            with click.progressbar(tasks, label=f"{name:24}", file=sys.stderr) as bar:
                for task in bar:
                    try:
                        answers[task.id] = (await collect(gw.call(expert, task.messages, params))).text
                    except ConclaveError:
                        answers[task.id] = None
            outputs[name] = answers
    finally:
        await gw.backends.close()
    return outputs
