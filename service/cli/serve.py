"""``conclave serve``: run the HTTP gateway under uvicorn (one process, or ``--workers N``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import click

from ..core.config import LOG_LEVELS
from .context import Context, config_option, pass_ctx


@click.command()
@config_option
@click.option("--host", help="Interface to listen on [default: server.host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="TCP port [default: server.port, 8000].")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Server processes [default: server.workers, 1]; more than 1 needs Redis (docs/configuration.md).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="[default: server.log_level, info]")
@click.option("--allow-volatile-redis", is_flag=True,
              help="Accept a Redis that keeps nothing on disk as the registry's store (CONCLAVE_ALLOW_VOLATILE_REDIS=1).")
@pass_ctx
def serve(ctx: Context, host, port, workers, log_level, allow_volatile_redis: bool):
    """Run the HTTP gateway (no auto-reload).

    Options given here win over the settings file and CONCLAVE_HOST / _PORT / _WORKERS / _LOG_LEVEL.
    With --workers N > 1 the processes share Redis (rate limits) and a /metrics that counts them all;
    local experts then have to be served by 'conclave worker' processes (CONCLAVE_SCHED_QUEUE=redis).

    \b
    Example:
      CONCLAVE_API_KEYS=sk-local conclave serve --host 0.0.0.0 --port 8000
      conclave serve --config conclave.yaml --workers 4
      curl localhost:8000/v1/chat/completions -H 'Authorization: Bearer sk-local' \\
           -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}]}'
    """
    import logging

    import uvicorn

    from ..http.app import check_store_durable

    if allow_volatile_redis:   # the app factory (in each server process) reads the environment
        os.environ["CONCLAVE_ALLOW_VOLATILE_REDIS"] = "1"
        ctx._settings = None
    s = ctx.settings
    host, port = host or s.host, s.port if port is None else port
    workers, log_level = workers or s.workers, log_level or s.log_level
    store = ctx.store   # fail here, with a clear message, if the store is unreachable
    check_store_durable(store, s)   # a registry in a Redis that forgets it all on restart: refuse
    ctx.gateway().routers.get()  # ... or if the configured router was never trained
    if workers > 1:
        refuse_unshared(s, store.list(), workers)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"conclave: experts from {store.describe()}; serving on http://{host}:{port}/v1"
               + (f" with {workers} processes" if workers > 1 else ""), err=True)
    # SIGTERM: stop accepting, let in-flight requests finish for up to CONCLAVE_SHUTDOWN_GRACE seconds;
    # requests waiting on the Redis queue get a retryable 503 just before that (service/http/shutdown.py)
    with shared_metrics(workers):
        factory = "create_shared_app_from_env" if workers > 1 else "create_app_from_env"   # shared: loads no model
        uvicorn.run(f"service.http.app:{factory}", factory=True, host=host, port=port, workers=workers,
                    http="service.http.wire:JsonErrorProtocol",   # malformed HTTP: an OpenAI-style JSON 400 (service/http/wire.py)
                    log_level=log_level, reload=False, timeout_graceful_shutdown=s.shutdown_grace,
                    # longer than clients' and load balancers' idle timeouts (60 s is common), so the client
                    # closes an idle connection first: a server-side close races a reused connection (a reset)
                    timeout_keep_alive=s.keepalive_seconds)


def refuse_unshared(settings, experts, workers: int) -> None:
    """Several server processes share nothing but Redis: refuse what would silently differ per process."""
    if not settings.redis_url:
        raise click.ClickException(
            f"--workers {workers} needs Redis (store.redis_url or CONCLAVE_REDIS_URL): without it each process "
            f"counts rate limits on its own, so a key gets {workers} times its limit; set it, or use --workers 1")
    vllm = sorted(e.name for e in experts if e.backend == "vllm")
    if vllm:
        raise click.ClickException(
            f"--workers {workers}: the vLLM experts {', '.join(vllm)} run inside each server process (one engine "
            "per process): serve them from a gateway with --workers 1, or remove them ('conclave experts remove')")
    local = sorted(e.name for e in experts if e.backend == "llamacpp")
    if local and settings.sched_queue != "redis":
        raise click.ClickException(
            f"--workers {workers}: every server process would load its own copy of the local experts "
            f"{', '.join(local)}: set CONCLAVE_SCHED_QUEUE=redis (scheduler.queue: redis) and run 'conclave worker' "
            "processes to host them, or remove them ('conclave experts remove NAME')")


@contextmanager
def shared_metrics(workers: int):
    """prometheus-client's multiprocess mode for ``--workers N``: each process writes its counts under
    PROMETHEUS_MULTIPROC_DIR (a fresh temporary folder unless set; its old files are removed first, so
    an earlier run never adds to this one) and /metrics sums them (service/core/metrics.py)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if workers == 1 and not given:
        yield None
        return
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="conclave-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)   # before uvicorn spawns its processes
    try:
        yield folder
    finally:
        if not given:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
            shutil.rmtree(folder, ignore_errors=True)
