"""The OpenAI fields beyond sampling, end to end: from the request into :class:`GenParams`, from
GenParams into an OpenAI-compatible upstream's request, and from its answer (tool calls, logprobs)
back into the shapes OpenAI's responses and SSE chunks use."""

from __future__ import annotations

import json

from experts_registry.errors import InvalidRequest
from experts_registry.model import Expert

from .backend import GenParams, sampling

# GenParams field -> the request field it comes from (the same name in OpenAI's chat API)
PASSED = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "top_logprobs",
          "presence_penalty", "frequency_penalty", "logit_bias", "user", "reasoning_effort", "metadata")
# what a completion-style expert (a base model behind /v1/completions) cannot be asked
CHAT_ONLY = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs",
             "reasoning_effort")


def request_fields(req) -> dict:
    """The GenParams keyword arguments a ChatRequest sets (those it leaves out keep their defaults)."""
    fields = {name: getattr(req, name) for name in PASSED if getattr(req, name) is not None}
    if req.logprobs:
        fields["logprobs"] = True
    if req.max_completion_tokens is not None:
        fields["limit_field"] = "max_completion_tokens"
    return fields


def json_mode(params: GenParams) -> bool:
    return (params.response_format or {}).get("type") in ("json_object", "json_schema")


def upstream_body(expert: Expert, params: GenParams) -> dict:
    """Sampling (``backend.sampling``) and :func:`upstream_fields` together: what every OpenAI-compatible
    request carries, the token limit under the name the client used (chat experts)."""
    if getattr(params, "raw", False):   # /v1/completions (its own module passes its fields): sampling only
        return sampling(expert, params)
    body = {**sampling(expert, params), **upstream_fields(expert, params)}
    if params.limit_field != "max_tokens" and expert.prompt_style != "completion":
        body[params.limit_field] = body.pop("max_tokens")
    return body


def upstream_fields(expert: Expert, params: GenParams) -> dict:
    """The fields an OpenAI-compatible upstream gets, exactly as the client sent them. A completion-style
    expert cannot take the chat-only ones: 400 naming the field and the expert."""
    fields = {name: getattr(params, name) for name in PASSED if getattr(params, name) is not None}
    if params.logprobs:
        fields["logprobs"] = True
    if expert.prompt_style == "completion":
        for name in CHAT_ONLY:
            if name in fields and not (name == "response_format" and not json_mode(params)):
                raise InvalidRequest(f"{name}: expert {expert.name!r} is a completion-style model "
                                     "(prompt_style completion), which cannot honour it: ask a chat expert",
                                     param=name, code="unsupported_by_expert")
        fields.pop("response_format", None)   # {"type": "text"}: what a completion is anyway
    return fields


def indexed_calls(calls: list[dict] | None) -> list[dict] | None:
    """A whole response's ``message.tool_calls`` in the streamed shape Delta carries (with ``index``)."""
    if not calls:
        return None
    return [{"index": i, "id": c.get("id"), "type": c.get("type", "function"),
             "function": {"name": (c.get("function") or {}).get("name", ""),
                          "arguments": (c.get("function") or {}).get("arguments", "")}}
            for i, c in enumerate(calls)]


def stream_calls(pieces: list[dict] | None) -> list[dict] | None:
    """A chunk's ``delta.tool_calls`` as Delta carries them: OpenAI's shape, keys that are null left out."""
    if not pieces:
        return None
    out = []
    for i, p in enumerate(pieces):
        piece = {k: v for k, v in p.items() if v is not None and k != "function"}
        piece.setdefault("index", i)
        if "id" not in piece:   # OpenAI names the type with the id, on a call's first piece only
            piece.pop("type", None)
        fn = {k: v for k, v in (p.get("function") or {}).items() if v is not None}
        if fn:
            piece["function"] = fn
        out.append(piece)
    return out


def choice_logprobs(choice: dict) -> list[dict] | None:
    """``choices[i].logprobs.content`` of an answer or a chunk, or None."""
    return (choice.get("logprobs") or {}).get("content") or None


def message_body(text: str, tool_calls: list[dict] | None) -> dict:
    """A response's ``choices[0].message``: content null when the answer is only tool calls."""
    message = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def logprobs_body(entries: list[dict] | None) -> dict | None:
    return {"content": entries, "refusal": None} if entries else None


def canonical_json(text: str) -> str | None:
    """``text`` as canonical JSON (sorted keys, no spaces), or None when it does not parse."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return None
