"""``conclave workers``: the cluster's worker processes and the placement table, read from Redis."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def workers(as_json):
    """List the `conclave worker` processes and which experts each holds.

    For each worker: heartbeat age, kind, capacity (models, memory), the experts it holds now,
    loads and unloads so far per expert, jobs served and busy seconds, and for vLLM workers each
    expert's tier (gpu, sleep1, sleep2, page_cache, disk) with its switch cost in seconds per tier
    (measured where the worker timed one, else a published prior); then each expert's
    holders and queued jobs.  Needs CONCLAVE_REDIS_URL (and the gateways' CONCLAVE_REDIS_PREFIX).

    Example:

        CONCLAVE_REDIS_URL=redis://127.0.0.1:6379/0 conclave workers --json
    """
    import redis

    from experts_registry.errors import ConfigError

    from ..core.config import load_settings
    from ..scheduler.placement import report

    s = load_settings()
    if not s.redis_url:
        raise ConfigError("set CONCLAVE_REDIS_URL: workers register in the gateways' Redis")
    rep = report(redis.Redis.from_url(s.redis_url), s.redis_prefix)
    if as_json:
        click.echo(json.dumps(rep, indent=2, sort_keys=True))
        return
    click.echo(f"{'worker':<16}{'state':<7}{'beat s':>8} {'kind':<10}{'models':>7}{'mem MB':>8}{'jobs':>7}"
               f"{'busy s':>9}  holds / loads / unloads")
    for w in rep["workers"]:
        loads = ",".join(f"{e}:{n}" for e, n in sorted(w["loads"].items())) or "-"
        unloads = ",".join(f"{e}:{n}" for e, n in sorted(w["unloads"].items())) or "-"
        click.echo(f"{w['name']:<16}{'live' if w['alive'] else 'dead':<7}{w['heartbeat_age_s']:>8.1f} "
                   f"{w['kind'] or '-':<10}{w['max_models']:>7}{w['memory_mb'] or '-':>8}{w['jobs']:>7}"
                   f"{w['busy_s']:>9.1f}  {','.join(w['holds']) or '-'} / {loads} / {unloads}")
        for e, t in sorted(w["tiers"].items()):
            click.echo(f"  {'':<14}{e:<24} tier {t['tier']:<11} switch {t['switch_s']:>7.2f} s  "
                       + " ".join(f"{k} {v:.2f}" for k, v in t["cost_s"].items())
                       + f"  (measured: {', '.join(t['measured']) or 'none'})")
    click.echo(f"loads in all: {rep['loads_total']}")
    for e, p in sorted(rep["placement"].items()):
        click.echo(f"  {e:<24} queued {p['queued']:>5}  held by {', '.join(p['holders']) or 'nobody'}")
