"""``conclave experts ...``: register, list, inspect, ping and remove experts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click

from experts_registry.errors import ConclaveError, ValidationFailed
from experts_registry.model import BACKENDS, CAPABILITIES, PROMPT_STYLES, Expert

from .context import Context, Group, pass_ctx


@click.group(cls=Group)
def experts():
    """Manage the expert registry (embedded SQLite, or Redis with CONCLAVE_REDIS_URL).

    \b
    Examples:
      conclave experts list
      conclave experts add qwen-remote --backend litellm --model hosted_vllm/qwen \\
          --api-base http://10.0.0.5:8000/v1 --skill math --skill code --params-b 7
      conclave experts ping smollm2
      conclave experts import litellm-config.yaml --dry-run   # from a LiteLLM proxy config
    """


@experts.command("add")
@click.argument("name", required=False)
@click.option("--backend", type=click.Choice(BACKENDS), help="llamacpp (GGUF on llama.cpp), vllm (vLLM engines: in the gateway, or `conclave worker "
              "--kind vllm` with the Redis queue) or litellm (remote endpoint).")
@click.option("--model", "model_ref", help="llamacpp: a GGUF path or bundled:<id>.  vllm: bundled:<id>, a .gguf "
              "file (converted once) or a Hugging Face model folder (config.json + *.safetensors).  litellm: a "
              "litellm model string.")
@click.option("--prompt-style", type=click.Choice(PROMPT_STYLES), default="chat", show_default=True)
@click.option("--template", help="Completion template with {prompt}, e.g. 'Q: {prompt}\\nA:'.")
@click.option("--system-prompt", help="System prompt this expert always gets.")
@click.option("--stop", multiple=True, help="Stop sequence (repeatable).")
@click.option("--api-base", help="Endpoint URL of a remote expert (e.g. a vLLM server's /v1).")
@click.option("--api-key-env", help="Name of the environment variable that holds the API key.")
@click.option("--skill", "skills", multiple=True, help="A skill or tag (repeatable).")
@click.option("--params-b", type=float, help="Active parameters, in billions.")
@click.option("--price-per-mtok", type=float, help="Price per million tokens.")
@click.option("--context-length", type=int, default=2048, show_default=True)
@click.option("--memory-mb", type=int, help="Memory footprint when loaded, in MB.")
@click.option("--description", default="")
@click.option("--tensor-parallel-size", type=click.IntRange(1), default=1, show_default=True,
              help="vllm: GPUs one engine of this expert spans.")
@click.option("--enforce-eager", is_flag=True, help="vllm: no CUDA graphs on GPUs (slower decoding; always so on CPU).")
@click.option("--capability", "--capabilities", "capabilities", multiple=True, metavar="CAP[,CAP]",
              help="What the expert serves beyond text (repeatable, or comma-separated): tools (function "
                   "calling), json_schema (JSON mode: response_format), vision (image_url parts), logprobs, "
                   "reasoning (reasoning_effort); 'none' for none of them. Not given: its backend's default "
                   "(llamacpp and vllm: json_schema,logprobs; litellm: tools,json_schema,logprobs,reasoning). conclave-auto routes a "
                   "request only to experts that serve what it asks for.")
@click.option("--from-json", "from_json", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the whole record from a JSON file instead (see 'experts show --json').")
@click.option("--replace", is_flag=True, help="Overwrite an expert of the same name.")
@click.option("--convert/--no-convert", default=True, show_default=True,
              help="vllm experts with a GGUF model: convert it once into the data dir now "
                   "(--no-convert: on the first load instead).")
@pass_ctx
def add(ctx: Context, name, backend, model_ref, from_json, replace, convert, **fields):
    """Register an expert.

    \b
    Examples:
      conclave experts add smol-math --backend llamacpp --model bundled:smollm2 \\
          --system-prompt "You are a careful mathematician." --skill math
      conclave experts add gpt-mini --backend litellm --model openai/gpt-4o-mini --api-key-env OPENAI_API_KEY \\
          --capability tools,json_schema,logprobs,vision
      conclave experts add smol-vllm --backend vllm --model bundled:smollm2
      conclave experts add llama-8b --backend vllm --model /models/Llama-3.1-8B-Instruct \\
          --context-length 8192 --memory-mb 30000 --tensor-parallel-size 1
      conclave experts show smollm2 --json > e.json && conclave experts add --from-json e.json --replace
    """
    from experts_registry.upstream import check_upstream

    expert = _expert_from_file(from_json) if from_json else _expert_from_options(name, backend, model_ref, fields)
    check_upstream(expert.api_base, ctx.settings.allow_unsafe_upstreams)
    if expert.backend == "vllm":
        from service.workers.vllm_convert import check_model_ref

        check_model_ref(expert.model, here=convert)
    if convert:
        _convert_for_vllm(ctx, expert)
    ctx.store.add(expert, replace=replace)
    click.echo(f"{'replaced' if replace else 'added'} expert {expert.name!r} ({expert.backend}: {expert.model})")


def _convert_for_vllm(ctx: Context, expert: Expert) -> None:
    """A GGUF vllm expert: the safetensors folder vLLM loads, made once before the record is stored."""
    from service.workers.vllm_convert import MARKER, model_dir

    if expert.backend != "vllm" or (Path(expert.model).expanduser() / MARKER).is_file():
        return
    click.echo(f"converting {expert.model} for vLLM (once; a minute or two) ...", err=True)
    t0 = time.perf_counter()
    try:
        folder = model_dir(expert.model, ctx.settings.home)
    except ConclaveError as exc:
        raise click.ClickException(f"{exc.message}; nothing was registered (--no-convert registers now and "
                                   "converts on the first load)") from None
    click.echo(f"converted into {folder} in {time.perf_counter() - t0:.0f} s", err=True)


def _expert_from_file(path: Path) -> Expert:
    try:
        return Expert.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"{path} is not valid JSON: {exc}") from None
    except TypeError as exc:
        raise ValidationFailed(f"{path} is not an expert record: {exc}") from None


def _expert_from_options(name, backend, model_ref, fields) -> Expert:
    missing = [flag for flag, v in (("NAME", name), ("--backend", backend), ("--model", model_ref)) if not v]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or give --from-json FILE)")
    fields["stop"] = tuple(fields["stop"])
    fields["skills"] = tuple(s for chunk in fields["skills"] for s in chunk.split(","))
    fields["capabilities"] = capability_option(fields["capabilities"])
    return Expert(name=name, backend=backend, model=model_ref, **fields)


def capability_option(values: tuple[str, ...]) -> tuple[str, ...] | None:
    """--capability values -> the record's field: None (backend default) when not given, () for 'none'."""
    caps = [c.strip().lower() for chunk in values for c in chunk.split(",") if c.strip()]
    if not values:
        return None
    if "none" in caps:
        if len(caps) > 1:
            raise click.UsageError("--capability none declares no capabilities: give it alone")
        return ()
    unknown = [c for c in caps if c not in CAPABILITIES]
    if unknown:
        raise click.UsageError(f"unknown capability {unknown[0]!r}: use {', '.join(CAPABILITIES)} or none")
    return tuple(caps)


def capability_text(e: Expert) -> str:
    """The expert's capabilities as one cell: 'tools,json_schema' or '-'; '(default)' when undeclared."""
    caps = ",".join(c for c in CAPABILITIES if c in e.supports) or "-"
    return caps if e.capabilities is not None else f"{caps} (default)"


@experts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the records as a JSON list.")
@pass_ctx
def list_(ctx: Context, as_json: bool):
    """List the registered experts.

    \b
    Example:
      conclave experts list --json | jq '.[].name'
    """
    records = ctx.store.list()
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in records], indent=2))
        return
    if not records:
        click.echo("no experts registered: add one with 'conclave experts add' "
                   "(or 'conclave experts add-bundled' for the local ones)")
        return
    rows = [(e.name, e.backend, e.prompt_style, e.model, ",".join(e.skills),
             "" if e.params_b is None else f"{e.params_b:g}B", e.context_length, capability_text(e))
            for e in records]
    _table(("NAME", "BACKEND", "STYLE", "MODEL", "SKILLS", "PARAMS", "CONTEXT", "CAPABILITIES"), rows)


def _table(header, rows) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


@experts.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@pass_ctx
def show(ctx: Context, name: str, as_json: bool):
    """Show one expert's record.

    \b
    Example:
      conclave experts show gemma-3-270m
    """
    expert = ctx.store.get(name)
    if as_json:
        click.echo(json.dumps(expert.to_dict(), indent=2))
        return
    for key, value in expert.to_dict().items():
        if key == "capabilities":
            click.echo(f"{key:15} {capability_text(expert)}")
        elif value not in (None, "", [], ()):
            click.echo(f"{key:15} {value}")


@experts.command("remove")
@click.argument("name")
@pass_ctx
def remove(ctx: Context, name: str):
    """Remove an expert from the registry.

    \b
    Example:
      conclave experts remove smol-math
    """
    ctx.store.remove(name)
    click.echo(f"removed expert {name!r}")


@experts.command("add-bundled")
@click.option("--replace", is_flag=True, help="Overwrite records of the same names.")
@pass_ctx
def add_bundled(ctx: Context, replace: bool):
    """Register the bundled local experts (SmolLM2-135M-Instruct, Gemma-3-270M).

    \b
    Example:
      conclave experts add-bundled --replace
    """
    from experts_registry import bundled_experts

    for expert in bundled_experts():
        try:
            ctx.store.add(expert, replace=replace)
            click.echo(f"added expert {expert.name!r}")
        except ConclaveError as exc:
            click.echo(exc.message, err=True)


@experts.command("ping")
@click.argument("name")
@click.option("--prompt", default="Say hello in five words.", show_default=True)
@click.option("--max-tokens", default=16, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print {expert, ok, seconds, text, usage} as JSON.")
@pass_ctx
def ping(ctx: Context, name: str, prompt: str, max_tokens: int, as_json: bool):
    """Send one real request to an expert and report its latency or its error.

    \b
    Example:
      conclave experts ping smollm2
    """
    from ..core.protocol import ChatRequest

    ctx.store.get(name)
    gw = ctx.gateway()
    req = ChatRequest(model=name, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                      temperature=0)

    async def run():
        try:
            return await gw.complete(req)
        finally:
            await gw.backends.close()

    t0 = time.perf_counter()
    try:
        _, gen = asyncio.run(run())
    except ConclaveError as exc:
        if as_json:
            click.echo(json.dumps({"expert": name, "ok": False, "error": exc.message}))
        raise click.ClickException(f"{name} failed after {time.perf_counter() - t0:.2f} s: {exc.message}")
    seconds = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({"expert": name, "ok": True, "seconds": round(seconds, 3), "text": gen.text,
                               "usage": gen.usage}))
    else:
        click.echo(f"{name}: ok in {seconds:.2f} s (load included): {gen.text.strip()!r}")
