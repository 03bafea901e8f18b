"""``conclave experts import``: register the models of a LiteLLM proxy config as experts."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .context import Context, pass_ctx


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print what would be registered and what does not map; change nothing.")
@click.option("--replace", is_flag=True, help="Overwrite experts of the same names.")
@click.option("--skip-refused", is_flag=True, help="Register the entries that map even when others are refused.")
@pass_ctx
def import_litellm(ctx: Context, file: Path, dry_run: bool, replace: bool, skip_refused: bool):
    """Register the models of a LiteLLM proxy config (its model_list) as experts.

    Each entry becomes a litellm expert (OpenAI-compatible ones with an api_base are served by the
    lean client); api_key must be os.environ/NAME, and only NAME is stored. One line per key that
    does not map (rpm/tpm, per-model timeouts, ...) says why; an entry that cannot be imported (a
    literal key, an unsafe api_base, a second deployment of a name) is refused, and then nothing is
    registered unless --skip-refused. A local command, like 'experts add': it writes the registry.

    \b
    Example:
      conclave experts import litellm-config.yaml --dry-run
      conclave experts import litellm-config.yaml
    """
    import yaml

    from experts_registry.litellm_import import Note, plan_import

    from ..backends.openai_backend import lean_eligible

    try:
        config = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{file} is not valid YAML: {exc}") from None
    plan = plan_import(config, os.environ, str(file), ctx.settings.allow_unsafe_upstreams)
    taken = {e.name for e in ctx.store.list()}
    for expert in [e for e in plan.experts if e.name in taken and not replace]:
        plan.experts.remove(expert)
        plan.refused.append(Note(f"expert {expert.name!r}", "model_name",
                                 "an expert of this name is registered: --replace overwrites it"))
    for expert in plan.experts:
        client = "lean OpenAI client" if ctx.settings.lean_client and lean_eligible(expert) else "litellm"
        key = f", key from ${expert.api_key_env}" if expert.api_key_env else ""
        where = f" at {expert.api_base}" if expert.api_base else ""
        click.echo(f"{'would add' if dry_run else 'adding'} {expert.name!r} ({expert.model}{where}{key}; {client})")
    for note in plan.notes:
        click.echo("note: " + note.line())
    for note in plan.refused:
        click.echo("refused: " + note.line(), err=True)
    if plan.refused and not skip_refused:
        nothing = "nothing would be registered" if dry_run else "nothing was registered"
        raise click.ClickException(f"{len(plan.refused)} refused: {nothing}; fix the file, or pass "
                                   f"--skip-refused to register the other {len(plan.experts)}")
    if dry_run:
        return
    for expert in plan.experts:
        ctx.store.add(expert, replace=replace)
    click.echo(f"registered {len(plan.experts)} expert{'s' if len(plan.experts) != 1 else ''} from {file}")
