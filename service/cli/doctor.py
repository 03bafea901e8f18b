"""``conclave doctor``: check that this install can serve, with a fix for each failing line."""

from __future__ import annotations

import sys

import click

from .context import config_option


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON (for scripts).")
@click.option("--smoke", is_flag=True,
              help="Only the llama.cpp build and a few tokens from each bundled expert (what install.sh runs).")
@click.option("--tokens", default=None, type=click.IntRange(1, 64),
              help="Tokens per test generation (default: 1, or 8 with --smoke).")
def doctor(as_json: bool, smoke: bool, tokens: int | None):
    """Check Python, the llama.cpp build and its CPU kernels, a generation per local expert,
    the encoder, the store and Redis; exit 0 when every check that applies passes.

    Native code runs in child processes: a build that crashes (SIGSEGV, SIGILL) is reported with
    the command that rebuilds it with safer flags.

    \b
    Examples:
      conclave doctor
      conclave doctor --json | jq '.checks[] | select(.status == "fail")'
    """
    from ..core.config import load_settings
    from .doctor_checks import passed, render, run_checks, to_json

    checks = run_checks(load_settings(), smoke=smoke, tokens=tokens)
    click.echo(to_json(checks) if as_json else render(checks))
    sys.exit(0 if passed(checks) else 1)
