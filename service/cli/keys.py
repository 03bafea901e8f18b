"""``conclave keys ...``: create, list and revoke API keys (stored hashed in the registry's store)."""

from __future__ import annotations

import json

import click

from experts_registry.keys import ROLES, new_key

from .context import Context, Group, pass_ctx


@click.group(cls=Group)
def keys():
    """Manage the gateway's API keys. Secrets are shown once, at creation, and stored hashed.

    \b
    Examples:
      conclave keys create ops --role admin
      conclave keys create alice --models smollm2,conclave-auto --rpm 60 --tpm 20000
      conclave keys revoke ck_1a2b3c4d
    """


@keys.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="user", show_default=True,
              help="admin keys may also change the registry and keys over HTTP.")
@click.option("--models", default="", help="Comma-separated models this key may use (default: all).")
@click.option("--rpm", type=click.IntRange(1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(1), default=None, help="Tokens per minute.")
@click.option("--json", "as_json", is_flag=True, help="Print {secret, key} as JSON.")
@pass_ctx
def create(ctx: Context, name, role, models, rpm, tpm, as_json):
    """Create a key and print its secret (once: it is not stored).

    \b
    Example:
      conclave keys create ci-bot --models conclave-auto --rpm 30
    """
    secret, key = new_key(name, role, [m.strip() for m in models.split(",") if m.strip()], rpm, tpm)
    ctx.store.put_key(key)
    if as_json:
        click.echo(json.dumps({"secret": secret, "key": key.public()}))
    else:
        click.echo(f"created {role} key {key.id} ({name}); its secret, shown only now:\n{secret}")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_(ctx: Context, as_json):
    """List keys (ids, names, roles, limits; never secrets).

    \b
    Example:
      conclave keys list --json
    """
    records = [k.public() for k in ctx.store.list_keys()]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo("no stored keys (authentication is off unless CONCLAVE_API_KEYS/CONCLAVE_ADMIN_KEYS are set)")
    for k in records:
        limits = ", ".join(f"{n} {k[n]}" for n in ("rpm", "tpm") if k[n]) or "no limits"
        state = "REVOKED" if k["revoked"] else "active"
        click.echo(f"{k['id']}  {k['name']:16} {k['role']:5}  {state:7}  models: "
                   f"{','.join(k['models']) or 'all'}; {limits}")


@keys.command("revoke")
@click.argument("key_id")
@pass_ctx
def revoke(ctx: Context, key_id):
    """Revoke a key (the gateway refuses it within CONCLAVE_KEY_CACHE_SECONDS).

    \b
    Example:
      conclave keys revoke ck_1a2b3c4d
    """
    from dataclasses import replace

    ctx.store.put_key(replace(ctx.store.get_key(key_id), revoked=True))
    click.echo(f"revoked {key_id}")
