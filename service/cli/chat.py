"""``conclave chat``: one answer through the same pipeline the server uses."""

from __future__ import annotations

import asyncio
import json

import click

from ..core.config import VIRTUAL_AUTO
from .context import Context, config_option, pass_ctx


@click.command()
@config_option
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
    from ..core.protocol import ChatRequest, completion_body, new_id

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
