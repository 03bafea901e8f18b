"""The ``conclave`` command line.

Commands are grouped by noun (``conclave experts ...``); each docstring is its
``--help`` and shows an example.  Errors print what to do next and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

from experts_registry.errors import ConclaveError

from .config import VIRTUAL_AUTO


class Group(click.Group):
    """A click group that turns Conclave's errors into a one-line message and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConclaveError as exc:
            raise click.ClickException(exc.message) from None


class Context:
    """Settings and store, opened on first use (``--help`` touches neither)."""

    def __init__(self):
        self._settings = None
        self._store = None

    @property
    def settings(self):
        if self._settings is None:
            from .config import load_settings

            self._settings = load_settings()
        return self._settings

    @property
    def store(self):
        if self._store is None:
            from experts_registry import offer_bundled, open_store

            s = self.settings
            self._store = open_store(s.home, s.redis_url, s.redis_prefix)
            offer_bundled(self._store)
        return self._store

    def gateway(self):
        from .backends import BackendPool
        from .gateway import Gateway

        return Gateway(self.settings, self.store, BackendPool(self.settings))


pass_ctx = click.make_pass_decorator(Context, ensure=True)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="conclave")
def main():
    """Conclave: an OpenAI-compatible gateway that answers with whole expert LLMs.

    \b
    Quick start:
      conclave experts list                 # the registered experts
      conclave chat "What is 2+2?"          # one answer through the routed pipeline
      conclave serve --port 8000            # the HTTP gateway
      conclave doctor                       # check this install (llama.cpp build, experts, store)

    Configuration comes from CONCLAVE_* environment variables (see README).
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes; each loads its own local models.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@pass_ctx
def serve(ctx: Context, host: str, port: int, workers: int, log_level: str):
    """Run the HTTP gateway (no auto-reload).

    \b
    Example:
      CONCLAVE_API_KEYS=sk-local conclave serve --host 0.0.0.0 --port 8000
      curl localhost:8000/v1/chat/completions -H 'Authorization: Bearer sk-local' \\
           -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}]}'
    """
    import logging

    import uvicorn

    store = ctx.store  # fail here, with a clear message, if the store is unreachable
    ctx.gateway().routers.get()  # ... or if the configured router was never trained
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"conclave: experts from {store.describe()}; serving on http://{host}:{port}/v1", err=True)
    # SIGTERM: stop accepting, let in-flight requests finish for up to CONCLAVE_SHUTDOWN_GRACE seconds;
    # requests waiting on the Redis queue get a retryable 503 just before that (service/shutdown.py)
    uvicorn.run("service.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, reload=False, timeout_graceful_shutdown=ctx.settings.shutdown_grace,
                # longer than clients' and load balancers' idle timeouts (60 s is common), so the client
                # closes an idle connection first: a server-side close races a reused connection (a reset)
                timeout_keep_alive=ctx.settings.keepalive_seconds)


@main.command()
@click.argument("prompt")
@click.option("--model", "-m", default=VIRTUAL_AUTO, show_default=True,
              help=f"An expert name, or {VIRTUAL_AUTO} to let the router choose.")
@click.option("--system", "-s", default=None, help="A system prompt.")
@click.option("--max-tokens", default=128, show_default=True, type=click.IntRange(1))
@click.option("--temperature", default=None, type=click.FloatRange(0, 2))
@click.option("--seed", default=None, type=int)
@click.option("--stream/--no-stream", default=True, show_default=True, help="Print tokens as they arrive.")
@click.option("--json", "as_json", is_flag=True, help="Print the OpenAI-style response body as JSON.")
@pass_ctx
def chat(ctx: Context, prompt, model, system, max_tokens, temperature, seed, stream, as_json):
    """One answer through the same pipeline the server uses.

    \b
    Examples:
      conclave chat "Name three primary colours."
      conclave chat --model gemma-3-270m "The capital of France is"
      conclave chat --json "Hello" | jq .conclave
    """
    from .protocol import ChatRequest, completion_body, new_id

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    req = ChatRequest(model=model, messages=messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
    gw = ctx.gateway()

    async def run():
        try:
            routed, chunks = await gw.open_stream(req)
            parts, finish, usage = [], "stop", {}
            async for d in chunks:
                parts.append(d.text)
                finish, usage = d.finish_reason or finish, d.usage or usage
                if stream and not as_json and d.text:
                    click.echo(d.text, nl=False)
            return routed, "".join(parts), finish, usage
        finally:
            await gw.backends.close()

    routed, text, finish, usage = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(completion_body(new_id(), routed.expert.name, text, finish, usage, routed.info()),
                              indent=2))
        return
    if not stream:
        click.echo(text, nl=False)
    click.echo()
    why = f" ({routed.decision.reason})" if routed.decision else ""
    click.echo(f"-- {routed.expert.name}{why}, {usage.get('completion_tokens', 0)} tokens", err=True)


def _register_groups() -> None:
    from benchmarks.cli import bench

    from .cli_doctor import doctor
    from .cli_experts import experts
    from .cli_keys import keys
    from .cli_profile import profile
    from .cli_router import route, router_group
    from .cli_worker import worker

    for command in (experts, keys, profile, route, router_group, bench, worker, doctor):
        main.add_command(command)


_register_groups()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
