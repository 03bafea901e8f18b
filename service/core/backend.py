"""The backend seam: something that turns a prompt into tokens for one expert.

A backend implements one async generator, :meth:`Backend.stream`, yielding
:class:`Delta` pieces; the last one carries ``finish_reason`` and ``usage``.
Non-streaming callers use :func:`collect`.  Backends raise errors from the
error tree (``UpstreamError`` naming the expert, ``ExpertUnavailable``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol

from experts_registry.model import Expert


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = True   # False: the caller wants the whole answer, so a backend may ask for it at once
    # OpenAI fields beyond sampling (issue 17), as the client sent them (JSON-ready: they travel through
    # the Redis queue).  A backend that cannot honour one that is set refuses the request; never drops it.
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None
    user: str | None = None
    reasoning_effort: str | None = None
    metadata: dict | None = None
    limit_field: str = "max_tokens"   # the name the client gave max_tokens (OpenAI's reasoning models want
                                      # max_completion_tokens); an OpenAI-compatible upstream gets the same
    # /v1/completions (service/core/completions.py): the one message is the prompt verbatim (or its token ids),
    # with no template; ``echo`` puts the prompt (and, with logprobs, its tokens' logprobs) before the answer.
    # ``top_logprobs`` is then the legacy ``logprobs`` count (0-5).  max_tokens may be 0 with echo (scoring).
    raw: bool = False
    echo: bool = False


@dataclass
class Delta:
    text: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    tool_calls: list[dict] | None = None   # OpenAI's streamed shape: [{"index", "id"?, "type"?, "function"}]
    logprobs: list[dict] | None = None     # OpenAI's choices[].logprobs.content entries for this piece


@dataclass
class Generation:
    text: str
    finish_reason: str
    usage: dict = field(default_factory=dict)
    tool_calls: list[dict] | None = None   # whole calls: [{"id", "type": "function", "function": {...}}]
    logprobs: list[dict] | None = None


class Backend(Protocol):
    def stream(self, expert: Expert, messages: list[dict], params: GenParams) -> AsyncIterator[Delta]: ...

    async def close(self) -> None: ...


async def collect(chunks: AsyncIterator[Delta]) -> Generation:
    parts, finish, usage, calls, logprobs = [], "stop", {}, {}, []
    async for d in chunks:
        parts.append(d.text)
        finish = d.finish_reason or finish
        usage = d.usage or usage
        merge_tool_calls(calls, d.tool_calls or ())
        logprobs.extend(d.logprobs or ())
    return Generation("".join(parts), finish, usage, [calls[i] for i in sorted(calls)] or None, logprobs or None)


def merge_tool_calls(calls: dict[int, dict], pieces) -> None:
    """Fold streamed tool-call pieces (OpenAI's delta shape, keyed by ``index``) into whole calls."""
    for piece in pieces:
        call = calls.setdefault(piece.get("index", len(calls)),
                                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        call["id"] = piece.get("id") or call["id"]
        fn = piece.get("function") or {}
        call["function"]["name"] += fn.get("name") or ""
        call["function"]["arguments"] += fn.get("arguments") or ""


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sampling(expert: Expert, params: GenParams) -> dict:
    """The OpenAI request fields both HTTP clients send: max_tokens, stop (the expert's, then the
    request's, at most 4; a raw prompt gets the request's only: the expert's belong to its template), and
    temperature / top_p / seed when given."""
    fields: dict = {"max_tokens": params.max_tokens}
    stop = ([] if params.raw else list(expert.stop)) + list(params.stop)
    if stop:
        fields["stop"] = stop[:4]
    for name in ("temperature", "top_p", "seed"):
        value = getattr(params, name)
        if value is not None:
            fields[name] = value
    return fields


def summary(message: str, expert: Expert, limit: int = 200) -> str:
    """An upstream's error text as the caller sees it: scrubbed, on one line, at most ``limit`` characters
    (the server log keeps the whole text)."""
    text = " ".join(scrub(message, expert).split())
    text = "".join(c for c in text if c.isprintable())
    return text if len(text) <= limit else text[: limit - 3] + "..."


CONTEXT_HINTS = ("context_length_exceeded", "context length", "context window", "maximum context")


def looks_like_context_overflow(code: object, message: str) -> bool:
    """True when an upstream's 4xx says the prompt is longer than the model's context."""
    text = f"{code} {message}".lower()
    return any(h in text for h in CONTEXT_HINTS)


def scrub(message: str, expert: Expert) -> str:
    """An upstream's error text, safe to show: the expert's API key masked, at most 500 characters."""
    key = os.environ.get(expert.api_key_env or "", "")
    if key and len(key) >= 4:
        message = message.replace(key, "***")
    return message[:500]
