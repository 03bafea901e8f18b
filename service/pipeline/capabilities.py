"""The capability gate: what a chat request needs from an expert, and which experts can serve it.

Pure functions, no I/O.  ``needs(req)`` reads the request's OpenAI fields (``tools``,
``response_format``, ``logprobs``, ``reasoning_effort``, ``image_url`` parts) and estimates the prompt's length;
``missing(expert, needs)`` says what an expert lacks (its capabilities: ``Expert.supports``).
A request naming an expert that lacks one is refused (400 naming the field); ``conclave-auto``
routes only among the experts that lack nothing (``serviceable``), and refuses when none is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from experts_registry.errors import InvalidRequest
from experts_registry.model import Expert

CONTEXT = "context"   # not a capability: the expert's context_length against the estimated prompt
BYTES_PER_TOKEN = 4   # English text runs ~4 bytes a token; the expert's own exact count still decides
PARAM = {"tools": "tools", "json_schema": "response_format", "vision": "messages",
         "logprobs": "logprobs", "reasoning": "reasoning_effort", CONTEXT: "messages"}
WHAT = {"tools": "tools (function calling)", "json_schema": "JSON mode (response_format)",
        "vision": "image inputs (image_url parts)", "logprobs": "logprobs",
        "reasoning": "a reasoning mode (reasoning_effort)", CONTEXT: "a longer context"}
ORDER = ("tools", "json_schema", "vision", "logprobs", "reasoning", CONTEXT)


@dataclass(frozen=True)
class Needs:
    capabilities: frozenset[str]
    prompt_tokens: int   # estimated from the messages' text (BYTES_PER_TOKEN)

    def describe(self) -> str:
        wants = [WHAT[c] for c in ORDER if c in self.capabilities]
        return ", ".join(wants) or "plain text"


def _get(obj: Any, key: str) -> Any:
    """A field of a request part: a pydantic model (declared or extra field) or a plain dict."""
    if isinstance(obj, dict):
        return obj.get(key)
    value = getattr(obj, key, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(key)
    return value


def _parts(message: Any) -> list:
    content = _get(message, "content")
    return content if isinstance(content, list) else []


def _text_bytes(message: Any) -> int:
    content = _get(message, "content")
    if isinstance(content, str):
        return len(content.encode())
    return sum(len((_get(p, "text") or "").encode()) for p in _parts(message))


def needs(req: Any) -> Needs:
    """What the request asks of an expert beyond plain text, and its estimated prompt length."""
    caps = set()
    if _get(req, "tools") and _get(req, "tool_choice") != "none":
        caps.add("tools")
    if _get(_get(req, "response_format") or {}, "type") in ("json_object", "json_schema"):
        caps.add("json_schema")
    if _get(req, "logprobs") is True:
        caps.add("logprobs")
    if _get(req, "reasoning_effort") is not None:
        caps.add("reasoning")
    messages = _get(req, "messages") or []
    if any(_get(p, "type") == "image_url" for m in messages for p in _parts(m)):
        caps.add("vision")
    prompt = sum(_text_bytes(m) for m in messages) // BYTES_PER_TOKEN
    return Needs(frozenset(caps), prompt)


def missing(expert: Expert, wants: Needs, *, context: bool = True) -> list[str]:
    """What the expert lacks, in ORDER; ``context`` also compares the estimated prompt with its context."""
    lacks = [c for c in ORDER[:-1] if c in wants.capabilities and c not in expert.supports]
    if context and wants.prompt_tokens >= expert.context_length:
        lacks.append(CONTEXT)
    return lacks


def _why(expert: Expert, lacks: Iterable[str], wants: Needs) -> str:
    reasons = []
    for c in lacks:
        if c == CONTEXT:
            reasons.append(f"the prompt (~{wants.prompt_tokens} tokens) does not fit its context of "
                           f"{expert.context_length}")
        else:
            reasons.append(f"no {WHAT[c]}")
    return "; ".join(reasons)


def check_expert(expert: Expert, wants: Needs) -> None:
    """A request naming ``expert``: 400 naming the first field it cannot serve.  The context length is
    left to the expert, which counts the prompt exactly (400 context_length_exceeded)."""
    lacks = missing(expert, wants, context=False)
    if not lacks:
        return
    first = lacks[0]
    have = ", ".join(sorted(expert.supports)) or "none"
    raise InvalidRequest(
        f"expert {expert.name!r} cannot serve '{PARAM[first]}': it does not support {WHAT[first]} "
        f"(its capabilities: {have}); send the request to an expert that declares '{first}' "
        f"('conclave experts list' shows them) or to conclave-auto, which routes only among those",
        param=PARAM[first], code="unsupported_parameter")


def serviceable(candidates: Sequence[Expert], wants: Needs) -> tuple[list[Expert], dict[str, str]]:
    """The candidates that can serve the request, and the others with why (``{name: reason}``)."""
    able, excluded = [], {}
    for expert in candidates:
        lacks = missing(expert, wants)
        if lacks:
            excluded[expert.name] = _why(expert, lacks, wants)
        else:
            able.append(expert)
    return able, excluded


def refuse_none(candidates: Sequence[Expert], wants: Needs) -> InvalidRequest:
    """The 400 for a routed request no candidate can serve; ``param`` names the field behind what most
    candidates lack, the message says what each one lacks."""
    lacks = {e.name: missing(e, wants) for e in candidates}
    counts = {c: sum(c in v for v in lacks.values()) for c in ORDER}
    first = max(ORDER, key=lambda c: (counts[c], -ORDER.index(c)))
    detail = "; ".join(f"{e.name}: {_why(e, lacks[e.name], wants)}" for e in candidates)
    fix = (f"register one with 'conclave experts add ... --capability {first}' or drop '{PARAM[first]}'"
           if first != CONTEXT else "shorten the messages or register an expert with a longer --context-length")
    return InvalidRequest(
        f"no expert can serve this request, which needs {wants.describe()} "
        f"(~{wants.prompt_tokens} prompt tokens): {detail}; {fix}", param=PARAM[first],
        code="context_length_exceeded" if first == CONTEXT else "unsupported_parameter")
