"""``conclave route``, ``conclave router train`` and ``conclave profile build``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from .context import Context, Group, pass_ctx
from .profile import profile

REPLAY_OPTIONS = [
    click.option("--questions", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="Replay questions (jsonl.gz); default: the shipped MMLU-Pro set."),
    click.option("--predictions", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="Recorded answers (csv.gz) for them."),
    click.option("--models", "models_json", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="models.json with columns, ids, active parameters and pools."),
    click.option("--pool", default="small-17", show_default=True, help="Named pool of models.json."),
]


def replay_options(f):
    for option in reversed(REPLAY_OPTIONS):
        f = option(f)
    return f


def _replay_files(questions, predictions, models_json):
    from router.replay_data import DEFAULTS

    return (questions or DEFAULTS["questions"], predictions or DEFAULTS["predictions"],
            models_json or DEFAULTS["models"])


def _k(value) -> int:
    from experts_registry.errors import InvalidRequest
    from router.correct import parse_k

    try:
        return parse_k(value)
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message) from None


def _encoder(name: str):
    from router.encoder import get_encoder

    return get_encoder(name, **({} if name.startswith("hashing-") else {"threads": 1}))


@click.command("route")
@click.argument("question")
@click.option("--router", "router_name", default=None, help="Router name (default: CONCLAVE_ROUTER).")
@click.option("--k", default="1", show_default=True, callback=lambda c, p, v: _k(v),
              help="Experts to call, or 'auto' (the correct router: until the weighted vote is clear).")
@click.option("--keywords-from", "keyword_expert", default=None,
              help="skills router: extract the question's skills with this expert (Symbolic-MoE's LLM "
                   "keyword step; the only expert calls this command makes).")
@click.option("--samples", default=5, show_default=True, type=click.IntRange(1, 10),
              help="Keyword samples (a keyword is kept when >= 2 agree).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@pass_ctx
def route(ctx: Context, question, router_name, k, keyword_expert, samples, as_json):
    """Show which experts a question would go to, and why, without calling any expert.

    \b
    Examples:
      conclave route "What is the derivative of x^2?" --router knn --k 3
      conclave route "What is the derivative of x^2?" --router correct --k auto
      conclave route "What is the derivative of x^2?" --router skills --keywords-from smollm2
    """
    from ..pipeline.routing import RouterHost

    metadata = _keywords(ctx, keyword_expert, question, samples) if keyword_expert else {}
    if keyword_expert:
        click.echo(f"keywords from {keyword_expert}: {', '.join(metadata.get('skills', [])) or '(none agreed)'}")
    decision = asyncio.run(RouterHost(ctx.settings).route(router_name, question, ctx.store.list(), k, metadata))
    if as_json:
        click.echo(json.dumps(decision.to_dict(), indent=2))
        return
    click.echo(f"{decision.router}: {', '.join(decision.experts)}")
    click.echo(f"why: {decision.reason}")
    for choice in decision.choices[: max(decision.k, 5)]:
        click.echo(f"  {choice.expert:28} {choice.score:8.4f}  {json.dumps(dict(choice.why))[:120]}")


def _keywords(ctx: Context, expert_name: str, question: str, samples: int) -> dict:
    from ..pipeline.keywords import extract_keywords

    expert, gw = ctx.store.get(expert_name), ctx.gateway()

    async def run():
        try:
            return await extract_keywords(gw.call, expert, question, n=samples)
        finally:
            await gw.backends.close()

    words = asyncio.run(run())
    return {"skills": words} if words else {}


@click.group("router", cls=Group)
def router_group():
    """Train routers; the gateway loads them from $CONCLAVE_HOME/routers/NAME.

    \b
    Examples:
      conclave router train correct             # on the shipped MMLU-Pro recorded answers
      conclave router train knn --encoder all-minilm-l6-v2
      conclave router train coe --live          # on the outcomes of 'conclave profile build'
    """


@router_group.command("train")
@click.argument("name", type=click.Choice(["skills", "coe", "knn", "correct"]))
@click.option("--live", is_flag=True, help="Fit on the outcomes recorded by 'conclave profile build'.")
@replay_options
@click.option("--encoder", default="static-minilm-256", show_default=True,
              help="static-minilm-256 (sub-millisecond), all-minilm-l6-v2, or hashing-<dim>.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State folder (default: $CONCLAVE_HOME/routers/NAME, where the gateway looks).")
@pass_ctx
def train(ctx: Context, name, live, questions, predictions, models_json, pool, encoder, out):
    """Fit a router on recorded outcomes and save it with its validation scores.

    \b
    The gateway uses a trained 'correct' router by default (CONCLAVE_ROUTER unset); name
    another with CONCLAVE_ROUTER.

    
    Example:
      conclave router train correct --pool small-17
      CONCLAVE_ROUTER=knn conclave serve
    """
    from router.training import replay_outcomes, train_router

    from ..pipeline.live_profile import load_outcomes, outcomes_dir
    from ..pipeline.routing import router_dir

    enc = _encoder(encoder)
    if live:
        outcomes, fit_on = load_outcomes(outcomes_dir(ctx.settings.home), enc), {"live": True}
    else:
        files = _replay_files(questions, predictions, models_json)
        outcomes = replay_outcomes(*files, pool, enc)
        fit_on = {"questions": str(files[0]), "predictions": str(files[1]), "pool": pool}
    folder = out or router_dir(ctx.settings) / name
    meta = train_router(name, outcomes, folder, encoder=enc, fit_on=fit_on)
    click.echo(f"trained {name} on {meta['n_questions']} questions x {len(meta['experts'])} experts -> {folder}")
    for k, scores in meta.get("validation", {}).items():
        if isinstance(scores, dict):
            click.echo(f"  held-out {k}: {json.dumps(scores)[:160]}")


@profile.command("build")
@click.option("--replay", is_flag=True, help="From recorded answers instead of asking the experts.")
@click.option("--experts", default=None, help="Comma-separated experts (default: all registered; replay: the pool).")
@click.option("--n", "n_questions", default=20, show_default=True, type=click.IntRange(1),
              help="Live: validation questions (MMLU dev) each expert answers.")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1))
@replay_options
@click.option("--encoder", default="static-minilm-256", show_default=True,
              help="static-minilm-256 (sub-millisecond), all-minilm-l6-v2, or hashing-<dim>.")
@pass_ctx
def build(ctx: Context, replay, experts, n_questions, seed, max_tokens, questions, predictions, models_json,
          pool, encoder):
    """Build Symbolic-MoE skill profiles (+1 right, -1 wrong per expert per skill).

    Live, every expert answers the validation questions (each loaded once);
    the outcomes are also saved for 'conclave router train --live'.

    \b
    Examples:
      conclave profile build --n 20                      # live, registered experts
      conclave profile build --replay --pool small-17    # recorded answers of 17 real LLMs
      CONCLAVE_ROUTER=skills conclave serve
    """
    from router.profiles import build_profile
    from router.training import profile_from_replay

    from ..pipeline.routing import router_dir

    enc, folder = _encoder(encoder), router_dir(ctx.settings) / "skills"
    names = [n.strip() for n in experts.split(",")] if experts else None
    if replay:
        prof = profile_from_replay(*_replay_files(questions, predictions, models_json), pool, folder, enc,
                                   experts=names)
    else:
        outcomes = _live_outcomes(ctx, names, n_questions, seed, max_tokens, enc)
        prof = build_profile(outcomes, encoder=enc)
        prof.save(folder, {"fit_on": {"live": True, "data": "mmlu dev", "n": len(outcomes)}})
    click.echo(f"skills profile: {len(prof.experts)} experts x {len(prof.skills)} skills -> {folder}")
    totals = prof.counts.sum(axis=1)
    for name, total in sorted(zip(prof.experts, totals), key=lambda t: -t[1])[:10]:
        click.echo(f"  {name:28} global competency {int(total):+d}")


def _live_outcomes(ctx: Context, names, n_questions, seed, max_tokens, enc):
    import random

    from aggregators.profile import read_records

    from ..backends import GenParams
    from ..pipeline.live_profile import answer_all, outcomes_dir, save_outcomes, to_outcomes

    experts = [ctx.store.get(n) for n in names] if names else ctx.store.list()
    records = read_records()
    random.Random(seed).shuffle(records)
    records = records[:n_questions]
    gw = ctx.gateway()

    async def run():
        try:
            return await answer_all(gw, experts, records, GenParams(max_tokens=max_tokens, temperature=0.0, seed=seed))
        finally:
            await gw.backends.close()

    outcomes = to_outcomes(records, experts, asyncio.run(run()), enc)
    path = save_outcomes(outcomes, outcomes_dir(ctx.settings.home), {"seed": seed, "max_tokens": max_tokens})
    acc = outcomes.accuracy()
    for e, a in zip(outcomes.experts, acc):
        click.echo(f"  {e:28} {a:.2f} right on {len(outcomes)} questions")
    click.echo(f"outcomes saved to {path}")
    return outcomes
