"""An expert's answer checked against what the request asked for, so that a field the expert ignored is an
error and not a silently different answer.

The gateway forwards ``logprobs``, ``tool_choice`` and ``response_format`` to the expert; an
OpenAI-compatible server that does not implement one may still answer 200. Checked on the answer as it
streams (at its end):

* ``logprobs: true``: an answer with text must carry logprobs;
* ``tool_choice`` ``required`` or a named function: the answer must be tool calls (the named one);
* ``response_format`` json_object / json_schema: the text must parse as JSON, unless the answer was cut
  by ``max_tokens`` (``finish_reason: "length"``, as OpenAI returns it).

A miss is an :class:`UpstreamError` (502, or an in-band error event after the streamed text) naming the
expert and the field it did not honour; from a local expert (the gateway's own worker), an
:class:`InvalidRequest` (400): that expert cannot serve the field.
"""

from __future__ import annotations

from typing import AsyncIterator

from experts_registry.errors import InvalidRequest, UpstreamError
from experts_registry.model import Expert

from ..backends import Delta, GenParams
from ..core.backend import merge_tool_calls
from ..core.openai_fields import canonical_json, json_mode

LOCAL = ("llamacpp", "vllm")   # the gateway's own workers


def needs_check(params: GenParams) -> bool:
    forced = params.tool_choice not in (None, "auto", "none")
    return params.logprobs or (bool(params.tools) and forced) or json_mode(params)


async def checked(expert: Expert, params: GenParams, chunks: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    text, calls, logprobs = [], {}, False
    async for delta in chunks:
        text.append(delta.text)
        merge_tool_calls(calls, delta.tool_calls or ())
        logprobs = logprobs or bool(delta.logprobs)
        if delta.finish_reason is not None:   # the last piece: judge the answer before passing it on
            ignored = _ignored(params, "".join(text), [calls[i] for i in sorted(calls)], logprobs,
                               delta.finish_reason)
            if ignored:
                raise _error(expert, ignored)
        yield delta


def _error(expert: Expert, ignored: str):
    """A remote server that ignored the field failed (502); one of the gateway's own workers that cannot
    serve it means the request asked this expert for what it cannot do (400)."""
    field = ignored.split(" ")[0]
    if expert.backend in LOCAL:
        return InvalidRequest(f"expert {expert.name!r} cannot serve {ignored}: this {expert.backend} expert "
                              "does not support the field; ask an expert that does", param=field,
                              code="unsupported_parameter")
    return UpstreamError(f"expert {expert.name!r} answered without honouring {ignored}: its server ignores "
                         "the field; ask an expert that supports it", expert=expert.name, param=field)


def _ignored(params: GenParams, text: str, calls: list[dict], logprobs: bool, finish: str) -> str | None:
    """The field the answer shows was not honoured, with a word of why; None when all were."""
    if params.logprobs and text and not logprobs:
        return "logprobs (no logprobs came back)"
    choice = params.tool_choice
    if params.tools and choice == "required" and not calls:
        return "tool_choice (\"required\", but no tool call came back)"
    if params.tools and isinstance(choice, dict):
        name = choice["function"]["name"]
        if not any(c["function"]["name"] == name for c in calls):
            return f"tool_choice (no call of {name!r} came back)"
    if json_mode(params) and not calls and finish != "length" and canonical_json(text) is None:
        return "response_format (the answer is not JSON)"
    return None
