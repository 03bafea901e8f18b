"""Wire models of the OpenAI-compatible API (requests in, response dicts out)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictStr, field_validator, model_validator

from experts_registry.errors import InvalidRequest

from .openai_fields import logprobs_body, message_body
from .validation import check_extras, check_request

# Request fields that would let a client choose where traffic goes: refused outright.
FORBIDDEN_FIELDS = ("api_base", "base_url", "api_key", "custom_llm_provider", "api_version", "extra_headers")


Float = Annotated[float, Strict()]   # a JSON number (an integer too); never a string
Int = Annotated[int, Strict()]


class Message(BaseModel):
    """One turn; the nested parts (content parts, tool calls) are checked by service/core/validation.py."""
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list | None = None
    name: StrictStr | None = None
    tool_call_id: StrictStr | None = None          # role "tool": the call it answers
    tool_calls: list | None = None                 # role "assistant": the calls an earlier answer made
    refusal: StrictStr | None = None               # role "assistant", as an earlier answer returned it
    annotations: list | None = None                # role "assistant": output metadata, not forwarded
    audio: None = None
    function_call: None = None

    def text(self) -> str:
        return content_text(self.content)

    def wire(self) -> dict:
        """The message as it travels to an expert: content as sent (parts kept), tool fields kept."""
        out = {"role": self.role, "content": self.content}
        for key in ("name", "tool_call_id", "tool_calls", "refusal"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def content_text(content) -> str:
    """The text of a message's content: the string, or its text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")


class ConclaveOptions(BaseModel):
    """The ``conclave`` object a client may send through ``extra_body``."""
    model_config = ConfigDict(extra="forbid")
    router: str | None = None
    k: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] | None = None  # "auto": adaptive (correct router)
    aggregator: str | None = None
    return_candidates: bool = False


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool | None = None


class ChatRequest(BaseModel):
    """A chat request, typed as OpenAI types it (no coercion: ``"10"`` is not an integer). A field OpenAI's
    API does not have is refused (service/core/validation.py), except the ``conclave`` extension."""
    model_config = ConfigDict(extra="allow")
    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    max_tokens: Int | None = Field(default=None, ge=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, gt=0, le=1)
    presence_penalty: Float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: Float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Any] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Int | None = Field(default=None, ge=0, le=20)
    stop: StrictStr | list[StrictStr] | None = None
    seed: Int | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: Int = 1
    tools: list[dict] | None = None
    tool_choice: StrictStr | dict | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: dict | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    metadata: dict[str, Any] | None = None
    user: StrictStr | None = None
    conclave: ConclaveOptions | None = None

    @model_validator(mode="after")
    def _structure(self):
        check_extras(self.model_extra or {}, FORBIDDEN_FIELDS)
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest("stream_options: only allowed when stream is true", param="stream_options")
        check_request(self)
        return self

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
        return bool(self.stream_options and self.stream_options.include_usage)


def stop_list(v: str | list[str] | None) -> list[str] | None:
    """A request's ``stop`` as a list (OpenAI's limits: up to 4 non-empty strings)."""
    if isinstance(v, str):
        v = [v]
    if v is not None and (len(v) > 4 or any(not s for s in v)):
        raise ValueError("stop takes up to 4 non-empty strings")
    return v


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def completion_body(rid: str, model: str, text: str, finish: str, usage: dict, extra: dict,
                    tool_calls: list[dict] | None = None, logprobs: list[dict] | None = None) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message_body(text, tool_calls),
                         "logprobs": logprobs_body(logprobs), "finish_reason": finish}],
            "usage": usage, "conclave": extra}


def chunk_body(rid: str, model: str, delta: dict, finish: str | None, extra: dict,
               usage: dict | None = None, logprobs: list[dict] | None = None) -> dict:
    body = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs_body(logprobs), "finish_reason": finish}],
            "conclave": extra}
    if usage is not None:
        body["usage"] = usage
    return body
