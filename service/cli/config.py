"""``conclave config ...``: the effective settings and where each came from; check a settings file."""

from __future__ import annotations

import json
import os

import click

from experts_registry.errors import ConfigError

from .context import Group


@click.group(cls=Group)
def config():
    """Show the effective settings, or check a conclave.yaml.

    \b
    Examples:
      conclave --config conclave.yaml config show
      conclave config validate conclave.yaml
    """


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print {group.key: {value, source, env}} as JSON.")
def show(as_json: bool):
    """Print every setting, secrets masked, with where it came from: default, file:PATH or env:NAME.

    \b
    Example:
      CONCLAVE_MOE_K=5 conclave --config conclave.yaml config show
    """
    from ..core.config import resolve_settings, specs
    from ..core.config_schema import GROUPS, shown

    settings, sources = resolve_settings()
    rows = [(spec, shown(spec, getattr(settings, spec.name)), sources[spec.name]) for spec in specs()]
    if as_json:
        click.echo(json.dumps({s.path: {"value": v, "source": src, "env": s.env} for s, v, src in rows}, indent=2))
        return
    path = os.environ.get("CONCLAVE_CONFIG")
    click.echo(f"# defaults < {path or '(no file: --config or CONCLAVE_CONFIG)'} < CONCLAVE_* variables")
    for group in GROUPS:
        click.echo(f"{group}:")
        for spec, value, source in (r for r in rows if r[0].group == group):
            click.echo(f"  {spec.key + ':':24} {json.dumps(value):32} # {source}")


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str):
    """Check a settings file: one line per error, with its line and path in the file; exit 1 on any.

    Reports wrong types and values, unknown sections and keys (with the nearest known one), and
    os.environ/NAME references to variables that are not set here.

    \b
    Example:
      conclave config validate conclave.yaml && conclave serve --config conclave.yaml
    """
    from ..core.config import resolve_settings, specs
    from ..core.config_file import read_config

    found = read_config(file, specs(), os.environ)
    errors = list(found.errors)
    if not errors:
        try:   # what needs several settings at once (the Redis queue needs a Redis)
            resolve_settings({**os.environ, "CONCLAVE_CONFIG": file})
        except ConfigError as exc:
            errors.append(f"{file}: {exc.message}")
    for line in errors:
        click.echo(line, err=True)
    if errors:
        raise SystemExit(1)
    for path in found.literal_secrets:
        click.echo(f"warning: {path} holds a secret in the file: write os.environ/NAME and export NAME", err=True)
    values = found.values
    click.echo(f"{file}: ok ({len(values)} setting{'s' if len(values) != 1 else ''} set)")
