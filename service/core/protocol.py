"""Wire models of the OpenAI-compatible API (requests in, response dicts out)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Request fields that would let a client choose where traffic goes: refused outright.
FORBIDDEN_FIELDS = ("api_base", "base_url", "api_key", "custom_llm_provider", "api_version", "extra_headers")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class ConclaveOptions(BaseModel):
    """The ``conclave`` object a client may send through ``extra_body``."""
    model_config = ConfigDict(extra="forbid")
    router: str | None = None
    k: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] | None = None  # "auto": adaptive (correct router)
    aggregator: str | None = None
    return_candidates: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    user: str | None = None
    conclave: ConclaveOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        return stop_list(v)

    @field_validator("n")
    @classmethod
    def _n(cls, v):
        if v != 1:
            raise ValueError("only n=1 is supported: send several requests for several answers")
        return v

    def forbidden_fields(self) -> list[str]:
        return [f for f in FORBIDDEN_FIELDS if f in (self.model_extra or {})]

    def prompt_text(self) -> str:
        """The text a router sees: the last user turn."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text()
        return self.messages[-1].text()

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


def stop_list(v: str | list[str] | None) -> list[str] | None:
    """A request's ``stop`` as a list (OpenAI's limits: up to 4 non-empty strings)."""
    if isinstance(v, str):
        v = [v]
    if v is not None and (len(v) > 4 or any(not s for s in v)):
        raise ValueError("stop takes up to 4 non-empty strings")
    return v


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion_body(rid: str, model: str, text: str, finish: str, usage: dict, extra: dict) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage, "conclave": extra}


def chunk_body(rid: str, model: str, delta: dict, finish: str | None, extra: dict,
               usage: dict | None = None) -> dict:
    body = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "conclave": extra}
    if usage is not None:
        body["usage"] = usage
    return body
