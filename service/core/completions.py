"""Wire models of the legacy ``POST /v1/completions`` (OpenAI's text completions) and its response shapes.

A completion runs as a *raw* job: ``GenParams(raw=True)`` and one message whose ``content`` is the prompt
verbatim (``raw_messages``), or whose ``prompt_tokens`` are token ids; no chat template, no completion
template, no system prompt.  Backends that cannot run a raw prompt refuse it.  Logprobs travel as
OpenAI's chat ``logprobs.content`` entries (``Delta.logprobs``), each with a ``text_offset``; an echoed
prompt's first token has ``logprob`` None.  :func:`legacy_logprobs` turns them into the legacy shape
(``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experts_registry.errors import InvalidRequest

from .protocol import FORBIDDEN_FIELDS, ConclaveOptions, stop_list

MAX_PROMPTS = 32          # prompts in one request (a batch): one choice each
MAX_LOGPROBS = 5          # OpenAI's ceiling for the legacy ``logprobs``
TokenIds = list[Annotated[int, Field(ge=0)]]


class CompletionRequest(BaseModel):
    """OpenAI's legacy completion request; types are strict (``"10"`` is not a number) and unknown fields
    are refused, so nothing a client sends is silently dropped."""
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    best_of: int | None = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    suffix: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, max_length=256)
    conclave: ConclaveOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        return stop_list(v)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("the prompt list is empty: send a string, strings, or token ids")
        if isinstance(v, list) and isinstance(v[0], (str, list)) and len(v) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts in one request: split the batch")
        if isinstance(v, list) and isinstance(v[0], list) and any(not ids for ids in v):
            raise ValueError("a token-id prompt is empty")
        return v

    def prompts(self) -> list[str | list[int]]:
        """One entry per choice: a string, or a list of token ids."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)

    def prompt_text(self) -> str:
        """The text a router sees (the first prompt; token ids have none)."""
        first = self.prompts()[0]
        return first if isinstance(first, str) else ""

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


def forbidden_fields(body: dict) -> list[str]:
    return [f for f in FORBIDDEN_FIELDS if f in body]


def raw_messages(prompt: str | list[int]) -> list[dict]:
    """The one message a raw job carries: the prompt verbatim, or its token ids."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": "user", "content": "", "prompt_tokens": list(prompt)}]


def raw_prompt(messages: list[dict]) -> str | list[int]:
    """The prompt of a raw job (see :func:`raw_messages`)."""
    m = messages[0]
    return list(m["prompt_tokens"]) if m.get("prompt_tokens") else m["content"]


def raw_fields(messages: list[dict], params) -> dict:
    """The completion fields an OpenAI-compatible upstream gets beyond sampling: prompt, echo, logprobs, user."""
    fields = {"prompt": raw_prompt(messages)}
    if params.user:
        fields["user"] = params.user
    if params.echo:
        fields["echo"] = True
    if params.logprobs:
        fields["logprobs"] = params.top_logprobs or 0
    return fields


def refuse_scoring(expert_name: str, params, why: str) -> None:
    """InvalidRequest (400 naming the field) for a raw job asking for echo or logprobs where ``why`` says
    they are not available."""
    field = "logprobs" if params.logprobs else "echo" if params.echo else None
    if params.raw and field:
        raise InvalidRequest(f"{field}: expert {expert_name!r} cannot return it ({why}); drop {field} or use a "
                             "llama.cpp or OpenAI-compatible expert", param=field)


def entry(token: str, logprob: float | None, top: dict[str, float] | None, offset: int) -> dict:
    """One logprobs entry in the chat shape, plus the token's ``text_offset``."""
    tops = None if top is None else [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": tops,
            "text_offset": offset}


def legacy_logprobs(entries: list[dict] | None) -> dict | None:
    """Chat-shaped entries as the legacy ``choices[].logprobs`` object."""
    if entries is None:
        return None
    offsets, at = [], 0
    for e in entries:
        offsets.append(e.get("text_offset", at))
        at = offsets[-1] + len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [None if e.get("top_logprobs") is None else
                             {t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def from_legacy(obj: dict | None) -> list[dict] | None:
    """An upstream's legacy ``logprobs`` object as chat-shaped entries (the inverse of legacy_logprobs)."""
    if not obj or not obj.get("tokens"):
        return None
    tops = obj.get("top_logprobs") or [None] * len(obj["tokens"])
    offsets = obj.get("text_offset") or [None] * len(obj["tokens"])
    out = []
    for token, lp, top, off in zip(obj["tokens"], obj.get("token_logprobs") or [], tops, offsets):
        e = entry(token, lp, top, off or 0)
        if off is None:
            del e["text_offset"]
        out.append(e)
    return out


def new_completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def choice(index: int, text: str, logprobs: list[dict] | None, finish: str | None) -> dict:
    return {"text": text, "index": index, "logprobs": legacy_logprobs(logprobs), "finish_reason": finish}


def text_completion_body(rid: str, model: str, choices: list[dict], usage: dict | None, extra: dict) -> dict:
    body = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "conclave": extra}
    if usage is not None:
        body["usage"] = usage
    return body
