"""The legacy text completion (``/v1/completions``) through the pipeline: check what the request asks for,
resolve its model (an expert by name, or ``conclave-auto`` routing on the prompt's text, k = 1 with the
usual fallback), and run each prompt as a raw job (``GenParams(raw=True)``) on the expert's backend."""

from __future__ import annotations

from typing import AsyncIterator

from experts_registry.errors import InvalidRequest, UpstreamError

from ..backends import Delta, GenParams, Generation, collect
from ..core.completions import CompletionRequest, raw_messages
from ..core.config import VIRTUAL_MOE, Settings
from .gateway import Gateway, Routed

DEFAULT_MAX_TOKENS = 16   # OpenAI's default for the legacy endpoint


def check(req: CompletionRequest) -> None:
    """Refuse (400 naming the field) what this endpoint cannot honour; nothing is silently dropped."""
    if req.n not in (None, 1):
        _refuse("n", "only n=1 is supported: send the request several times for several answers")
    if req.best_of not in (None, 1):
        _refuse("best_of", "best_of is not supported (only 1): send several requests and compare their logprobs")
    if req.suffix:
        _refuse("suffix", "suffix (fill-in-the-middle) is not supported by this gateway's experts")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            _refuse(name, f"{name} is not supported on /v1/completions: drop it or send 0")
    if req.logit_bias:
        _refuse("logit_bias", "logit_bias is not supported on /v1/completions")
    if req.max_tokens == 0 and not req.echo:
        _refuse("max_tokens", "max_tokens 0 returns nothing: set echo=true to score the prompt (with logprobs)")
    if req.stream and len(req.prompts()) > 1:
        _refuse("prompt", "stream one prompt at a time (a batch of prompts is answered without stream)")
    if req.stream_options is not None and not req.stream:
        _refuse("stream_options", "stream_options is only allowed with stream=true")
    _check_conclave(req)


def _check_conclave(req: CompletionRequest) -> None:
    opts = req.conclave
    if req.model == VIRTUAL_MOE or (opts and opts.k not in (None, 1)):
        _refuse("conclave.k" if opts and opts.k not in (None, 1) else "model",
                "a completion is one expert's text and logprobs, never an aggregate of several: use conclave-auto "
                "(k = 1) or name an expert")
    if opts and opts.aggregator:
        _refuse("conclave.aggregator", "completions are not aggregated (k = 1): drop conclave.aggregator")


def _refuse(field: str, why: str) -> None:
    raise InvalidRequest(f"{field}: {why}", param=field)


def params(settings: Settings, req: CompletionRequest) -> GenParams:
    wanted = DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
    if wanted > settings.max_tokens_cap:
        _refuse("max_tokens", f"{wanted} is above this gateway's cap of {settings.max_tokens_cap} "
                              "(CONCLAVE_MAX_TOKENS_CAP)")
    return GenParams(max_tokens=wanted, temperature=req.temperature, top_p=req.top_p, stop=tuple(req.stop or ()),
                     seed=req.seed, stream=req.stream, logprobs=req.logprobs is not None,
                     top_logprobs=req.logprobs, user=req.user, raw=True, echo=req.echo)


async def open_completion(gw: Gateway, req: CompletionRequest, prompt: str | list[int], gen: GenParams,
                          allowed: tuple[str, ...] = ()) -> tuple[Routed, AsyncIterator[Delta]]:
    """One prompt's answer as a stream; errors before the first token raise here."""
    routed = await _resolve(gw, req, prompt, allowed)
    messages = raw_messages(prompt)
    if routed.decision is None:
        return routed, gw.call(routed.expert, messages, gen)
    return await gw._with_fallback(routed, messages, gen)


async def complete(gw: Gateway, req: CompletionRequest, prompt: str | list[int], gen: GenParams,
                   allowed: tuple[str, ...] = ()) -> tuple[Routed, Generation]:
    routed, chunks = await open_completion(gw, req, prompt, gen, allowed)
    out = await collect(chunks)
    if gen.logprobs and out.logprobs is None and (out.text or gen.echo):
        raise UpstreamError(f"expert {routed.expert.name!r} returned no logprobs for a request that asked for them",
                            expert=routed.expert.name)
    return routed, out


async def _resolve(gw: Gateway, req: CompletionRequest, prompt, allowed) -> Routed:
    from .gateway import VIRTUAL_MODELS

    if req.model in VIRTUAL_MODELS and not (isinstance(prompt, str) and prompt.strip()):
        _refuse("prompt", f"{req.model} routes on the prompt's text: send text (not token ids, not an empty "
                          "string), or name an expert")
    return await gw.resolve(req.model_copy(update={"prompt": prompt}), allowed)
