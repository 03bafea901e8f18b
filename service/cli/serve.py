"""``conclave serve``: run the HTTP gateway under uvicorn."""

from __future__ import annotations

import click

from .context import Context, pass_ctx


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes; each loads its own local models.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--allow-volatile-redis", is_flag=True,
              help="Accept a Redis that keeps nothing on disk as the registry's store (CONCLAVE_ALLOW_VOLATILE_REDIS=1).")
@pass_ctx
def serve(ctx: Context, host: str, port: int, workers: int, log_level: str, allow_volatile_redis: bool):
    """Run the HTTP gateway (no auto-reload).

    \b
    Example:
      CONCLAVE_API_KEYS=sk-local conclave serve --host 0.0.0.0 --port 8000
      curl localhost:8000/v1/chat/completions -H 'Authorization: Bearer sk-local' \\
           -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}]}'
    """
    import logging
    import os

    import uvicorn

    from ..http.app import check_store_durable

    if allow_volatile_redis:   # the app factory (in each server process) reads the environment
        os.environ["CONCLAVE_ALLOW_VOLATILE_REDIS"] = "1"
        ctx._settings = None
    store = ctx.store
    check_store_durable(store, ctx.settings)   # a registry in a Redis that forgets it all on restart: refuse  # fail here, with a clear message, if the store is unreachable
    ctx.gateway().routers.get()  # ... or if the configured router was never trained
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"conclave: experts from {store.describe()}; serving on http://{host}:{port}/v1", err=True)
    # SIGTERM: stop accepting, let in-flight requests finish for up to CONCLAVE_SHUTDOWN_GRACE seconds;
    # requests waiting on the Redis queue get a retryable 503 just before that (service/http/shutdown.py)
    uvicorn.run("service.http.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                http="service.http.wire:JsonErrorProtocol",   # malformed HTTP: an OpenAI-style JSON 400 (service/http/wire.py)
                log_level=log_level, reload=False, timeout_graceful_shutdown=ctx.settings.shutdown_grace,
                # longer than clients' and load balancers' idle timeouts (60 s is common), so the client
                # closes an idle connection first: a server-side close races a reused connection (a reset)
                timeout_keep_alive=ctx.settings.keepalive_seconds)
