"""Checks of a chat request's structured OpenAI fields, as OpenAI's API makes them.

Pydantic (``service/core/protocol.py``) checks the scalar fields' types and ranges; this module checks
what nests: messages and their content parts, ``tools``, ``tool_choice``, ``response_format``,
``logit_bias``, ``metadata``, and the fields that only mean something together. Every failure is an
:class:`InvalidRequest` (400 ``invalid_request_error``) whose ``param`` is the field's path in OpenAI's
notation, e.g. ``messages[1].content[0].type``. A field no OpenAI chat request has is refused, as
OpenAI refuses it ("Unrecognized request argument supplied"), except the ``conclave`` extension.
"""

from __future__ import annotations

import re
from typing import Any

from experts_registry.errors import InvalidRequest

NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
PART_FIELDS = {"text": ("text", str), "image_url": ("image_url", dict), "input_audio": ("input_audio", dict)}
TEXT_ONLY_ROLES = ("system", "developer", "tool")
AUDIO_FORMATS = ("wav", "mp3")
# OpenAI chat fields this gateway does not implement: refused (with why) whenever they ask for something
UNSUPPORTED = {
    "functions": "the deprecated functions field: send tools instead",
    "function_call": "the deprecated function_call field: send tool_choice instead",
    "audio": "audio output", "modalities": "output modalities other than text",
    "prediction": "predicted outputs", "web_search_options": "web search",
    "store": "stored completions", "service_tier": "service tiers",
    "prompt_cache_key": "prompt cache keys", "safety_identifier": "safety identifiers",
    "verbosity": "the verbosity setting",
}
HARMLESS = {"store": (False,), "modalities": (["text"],), "service_tier": ("auto", "default")}


def refuse(param: str, message: str) -> None:
    raise InvalidRequest(f"{param}: {message}", param=param, code="invalid_value")


def check_extras(extras: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Unknown top-level fields are refused; ``allowed`` (the fields another check refuses with its own
    message, such as ``api_base``) pass here."""
    for name, value in extras.items():
        if name in allowed:
            continue
        if name in UNSUPPORTED:
            if value is None or value in HARMLESS.get(name, ()):
                continue
            refuse(name, f"this gateway does not support {UNSUPPORTED[name]}")
        raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name,
                             code="unknown_parameter")


def check_messages(messages: list) -> None:
    for i, m in enumerate(messages):
        at = f"messages[{i}]"
        if m.role == "tool" and not m.tool_call_id:
            refuse(f"{at}.tool_call_id", "a message with role 'tool' needs the tool_call_id it answers")
        if m.tool_call_id is not None and m.role != "tool":
            refuse(f"{at}.tool_call_id", "only a message with role 'tool' carries a tool_call_id")
        if m.tool_calls is not None:
            if m.role != "assistant":
                refuse(f"{at}.tool_calls", "only an assistant message carries tool_calls")
            check_tool_calls(m.tool_calls, f"{at}.tool_calls")
        for name in ("refusal", "annotations"):
            if getattr(m, name) is not None and m.role != "assistant":
                refuse(f"{at}.{name}", "only an assistant message carries this field")
        if m.content is None:
            if m.role != "assistant" or not m.tool_calls:
                refuse(f"{at}.content", "content is required (only an assistant message with tool_calls "
                                        "may leave it out)")
            continue
        if isinstance(m.content, list):
            check_parts(m.content, at, m.role)


def check_parts(parts: list, at: str, role: str) -> None:
    if not parts:
        refuse(f"{at}.content", "an empty list of content parts: send at least one part")
    for j, part in enumerate(parts):
        where = f"{at}.content[{j}]"
        if not isinstance(part, dict):
            refuse(where, "a content part is an object with a type, e.g. {\"type\": \"text\", \"text\": \"hi\"}")
        kind = part.get("type")
        if kind not in PART_FIELDS or (role in TEXT_ONLY_ROLES + ("assistant",) and kind != "text"):
            allowed = "text" if role in TEXT_ONLY_ROLES + ("assistant",) else "text, image_url or input_audio"
            refuse(f"{where}.type", f"unknown content part type {kind!r} for a {role} message: use {allowed}")
        key, kind_type = PART_FIELDS[kind]
        if set(part) - {"type", key}:
            refuse(f"{where}.{sorted(set(part) - {'type', key})[0]}", "Unrecognized argument in a content part")
        if not isinstance(part.get(key), kind_type):
            refuse(f"{where}.{key}", f"a {kind} part needs {key} ({kind_type.__name__})")
        if kind == "image_url":
            check_keys(part[key], f"{where}.image_url", {"url": str}, {"detail": ("auto", "low", "high")})
        elif kind == "input_audio":
            check_keys(part[key], f"{where}.input_audio", {"data": str, "format": str}, {"format": AUDIO_FORMATS})


def check_keys(obj: dict, at: str, required: dict[str, type], choices: dict[str, tuple]) -> None:
    """``obj`` has each required key with its type, values among ``choices``, and no other key."""
    for key, kind in required.items():
        if not isinstance(obj.get(key), kind):
            refuse(f"{at}.{key}", f"required ({kind.__name__})")
    for key, value in obj.items():
        if key not in required and key not in choices:
            refuse(f"{at}.{key}", "Unrecognized argument")
        if choices.get(key) is not None and value not in choices[key]:
            refuse(f"{at}.{key}", f"must be one of {', '.join(map(str, choices[key]))}, not {value!r}")


def check_tool_calls(calls: list, at: str) -> None:
    """An assistant turn's tool calls, as an earlier response returned them."""
    for i, call in enumerate(calls):
        where = f"{at}[{i}]"
        if not isinstance(call, dict) or call.get("type") != "function":
            refuse(f"{where}.type", "a tool call has type 'function'")
        check_keys(call, where, {"id": str, "type": str, "function": dict}, {})
        check_keys(call["function"], f"{where}.function", {"name": str, "arguments": str}, {})


def check_tools(tools: list) -> None:
    if not tools:
        refuse("tools", "an empty list: leave tools out, or declare at least one function")
    if len(tools) > 128:
        refuse("tools", f"{len(tools)} tools: at most 128")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            refuse(f"{where}.type", "a tool has type 'function'")
        check_keys(tool, where, {"type": str, "function": dict}, {})
        fn = tool["function"]
        check_keys(fn, f"{where}.function", {"name": str},
                   {"description": None, "parameters": None, "strict": None})
        if not NAME.fullmatch(fn["name"]):
            refuse(f"{where}.function.name", "a function name is 1-64 letters, digits, '_' or '-'")
        if "description" in fn and not isinstance(fn["description"], str):
            refuse(f"{where}.function.description", "must be a string")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            refuse(f"{where}.function.parameters", "must be a JSON Schema object")
        if "strict" in fn and not isinstance(fn["strict"], (bool, type(None))):
            refuse(f"{where}.function.strict", "must be a boolean")


def check_tool_choice(choice: Any, tools: list | None) -> None:
    if not tools:
        refuse("tool_choice", "tool_choice is only allowed when tools are specified")
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            refuse("tool_choice", f"must be 'none', 'auto', 'required' or a function, not {choice!r}")
        return
    if not isinstance(choice, dict) or choice.get("type") != "function":
        refuse("tool_choice", "must be 'none', 'auto', 'required' or {\"type\": \"function\", "
                              "\"function\": {\"name\": ...}}")
    check_keys(choice, "tool_choice", {"type": str, "function": dict}, {})
    check_keys(choice["function"], "tool_choice.function", {"name": str}, {})
    declared = [t["function"]["name"] for t in tools]
    if choice["function"]["name"] not in declared:
        refuse("tool_choice.function.name", f"{choice['function']['name']!r} is not one of the declared "
                                            f"tools ({', '.join(declared)})")


def check_response_format(fmt: Any) -> None:
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        refuse("response_format.type", "must be 'text', 'json_object' or 'json_schema'")
    if fmt["type"] != "json_schema":
        check_keys(fmt, "response_format", {"type": str}, {})
        return
    check_keys(fmt, "response_format", {"type": str, "json_schema": dict}, {})
    spec = fmt["json_schema"]
    check_keys(spec, "response_format.json_schema", {"name": str, "schema": dict},
               {"description": None, "strict": None})
    if not NAME.fullmatch(spec["name"]):
        refuse("response_format.json_schema.name", "a schema name is 1-64 letters, digits, '_' or '-'")
    if spec.get("strict") not in (None, True, False):
        refuse("response_format.json_schema.strict", "must be a boolean")


def check_logit_bias(bias: dict) -> None:
    for token, value in bias.items():
        if not token.isdigit():
            refuse("logit_bias", f"keys are token ids (strings of digits), not {token!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            refuse("logit_bias", f"the bias of token {token} must be a number from -100 to 100, not {value!r}")


def check_metadata(metadata: dict) -> None:
    if len(metadata) > 16:
        refuse("metadata", f"{len(metadata)} pairs: at most 16")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            refuse("metadata", f"{key[:64]!r}: keys are strings of at most 64 characters, values strings of "
                               "at most 512")


def check_request(req) -> None:
    """Every check above, on a ChatRequest whose scalar fields pydantic already checked."""
    check_messages(req.messages)
    if req.tools is not None:
        check_tools(req.tools)
    if req.tool_choice is not None:
        check_tool_choice(req.tool_choice, req.tools)
    if req.parallel_tool_calls is not None and not req.tools:
        refuse("parallel_tool_calls", "parallel_tool_calls is only allowed when tools are specified")
    if req.response_format is not None:
        check_response_format(req.response_format)
    if req.top_logprobs is not None and not req.logprobs:
        refuse("top_logprobs", "top_logprobs needs logprobs: true")
    if req.logit_bias is not None:
        check_logit_bias(req.logit_bias)
    if req.metadata is not None:
        check_metadata(req.metadata)
