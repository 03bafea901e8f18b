"""Remote experts through litellm: any OpenAI-compatible server (e.g. vLLM) or provider.

The expert record decides where traffic goes (``model``, ``api_base``); the API
key is read from the environment variable the record names, never stored, and
never echoed in errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from experts_registry.errors import ConclaveError, ExpertTimeout, UpstreamError, ValidationFailed
from experts_registry.upstream import check_upstream
from experts_registry.model import Expert

from ..core.backend import Delta, GenParams, scrub, summary, usage_dict
from .openai_backend import CLIENT_STATUSES, client_error
from ..core.completions import raw_prompt, refuse_scoring
from ..core.openai_fields import choice_logprobs, stream_calls, upstream_body
from ..core.prompting import completion_prompt, native_messages

log = logging.getLogger("conclave.upstream")
CHECK_S = 30.0


def _litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map at import
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _kwargs(expert: Expert, params: GenParams, timeout: float) -> dict:
    kw = {"model": expert.model, "stream": True, "timeout": timeout,
          "num_retries": 0, "max_retries": 0,  # the gateway retries, with its own budget and breaker
          "api_key": os.environ.get(expert.api_key_env, "") if expert.api_key_env else "none",
          **upstream_body(expert, params)}
    if params.tools:   # litellm would route a request with tools through its MCP bridge (and import mcp)
        kw["_skip_mcp_handler"] = True
    if params.user is not None:   # litellm drops user for models outside OpenAI's catalogue: opt in to send it
        kw["allowed_openai_params"] = ["user"]
    if "metadata" in kw:   # litellm keeps its own metadata argument for its callbacks: send the client's on
        kw["extra_body"] = {"metadata": kw.pop("metadata")}
    if expert.api_base:
        kw["api_base"] = expert.api_base
    return kw


def _retry_after(exc: Exception) -> float | None:
    """The upstream's Retry-After header, when the exception carries the response."""
    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None),
                                                                        "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


class LiteLLMBackend:
    def __init__(self, timeout: float = 120.0, allow_unsafe: bool = False):
        self.timeout = timeout
        self.allow_unsafe = allow_unsafe
        self._checked: dict[str, float] = {}   # api_base -> when its addresses were last found safe
        _litellm()  # import now (3-4 s), not inside the first request's deadline

    async def stream(self, expert: Expert, messages: list[dict], params: GenParams):
        litellm = _litellm()
        kw = _kwargs(expert, params, self.timeout)
        await self._check(expert)
        refuse_scoring(expert.name, params, "litellm's text_completion is not asked for them; register the expert "
                                            "with an OpenAI-compatible model (openai/NAME and an api_base)")
        try:
            if params.raw:   # /v1/completions: the client's prompt verbatim
                response = await litellm.atext_completion(prompt=raw_prompt(messages), **kw)
            elif expert.prompt_style == "completion":
                response = await litellm.atext_completion(prompt=completion_prompt(expert, messages), **kw)
            else:
                response = await litellm.acompletion(messages=native_messages(expert, messages),
                                                     stream_options={"include_usage": True}, **kw)
            async for delta in _deltas(response):
                yield delta
        except ConclaveError:
            raise
        except Exception as exc:  # the boundary to a third-party library: every failure names the expert
            if isinstance(exc, litellm.Timeout):
                raise ExpertTimeout(f"expert {expert.name!r} timed out", expert=expert.name) from None
            status = getattr(exc, "status_code", None)
            log.warning("expert %s failed: %s: %s", expert.name, type(exc).__name__, scrub(str(exc), expert)[:4000])
            short = summary(str(exc), expert)
            if isinstance(exc, litellm.UnsupportedParamsError):   # litellm's 500 for "the provider cannot"
                raise client_error(expert, 400, None, short) from None
            if isinstance(exc, litellm.ContextWindowExceededError):
                raise client_error(expert, 400, "context_length_exceeded", short) from None
            if status in CLIENT_STATUSES:
                raise client_error(expert, status, getattr(exc, "code", None), short) from None
            retryable = (isinstance(exc, (litellm.APIConnectionError, litellm.InternalServerError,
                                          litellm.ServiceUnavailableError, litellm.RateLimitError))
                         or (isinstance(status, int) and (status == 429 or status >= 500)))
            raise UpstreamError(f"expert {expert.name!r} failed: {type(exc).__name__}: "
                                f"{short}", expert=expert.name, retryable=retryable,
                                retry_after=_retry_after(exc)) from None

    async def _check(self, expert: Expert) -> None:
        """Resolve the api_base again before connecting (at most every CHECK_S): litellm's HTTP client
        resolves on its own, so this narrows, but cannot close, a DNS-rebinding window (the lean client
        pins the checked address)."""
        base = expert.api_base
        if not base or self.allow_unsafe or time.monotonic() - self._checked.get(base, -CHECK_S) < CHECK_S:
            return
        try:
            await asyncio.to_thread(check_upstream, base)
        except ValidationFailed as exc:
            raise UpstreamError(f"expert {expert.name!r}: {exc.message}", expert=expert.name) from None
        self._checked[base] = time.monotonic()

    async def close(self) -> None:
        return None


async def _deltas(response):
    finish, usage = "stop", None
    async for chunk in response:
        u = getattr(chunk, "usage", None)
        if u:
            usage = usage_dict(u.prompt_tokens or 0, u.completion_tokens or 0)
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = getattr(choice, "delta", None)
        text = getattr(delta, "content", None) or getattr(choice, "text", None) or ""
        calls = stream_calls([_plain(c) for c in getattr(delta, "tool_calls", None) or ()])
        logprobs = choice_logprobs({"logprobs": _plain(getattr(choice, "logprobs", None))})
        if text or calls or logprobs:
            yield Delta(text, tool_calls=calls, logprobs=logprobs)
        finish = choice.finish_reason or finish
    yield Delta("", finish, usage or usage_dict(0, 0))


def _plain(obj):
    """litellm's response objects (pydantic models, or dicts) as plain JSON-ready dicts."""
    if obj is None or isinstance(obj, dict):
        return obj
    return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)
