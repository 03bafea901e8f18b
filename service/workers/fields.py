"""What the local workers share about the OpenAI fields beyond sampling: tools are refused (no
tool-call parser runs here), ``response_format`` is read, ``logit_bias`` keys become token ids."""

from __future__ import annotations

from experts_registry.errors import InvalidRequest
from experts_registry.model import Expert

from ..core.backend import GenParams


def refuse_tools(expert: Expert, params: GenParams, engine: str) -> None:
    """``tools`` (unless ``tool_choice`` is "none": the answer is text then) -> 400 naming the field."""
    if params.tools and params.tool_choice != "none":
        raise InvalidRequest(f"expert {expert.name!r} ({engine}) cannot serve 'tools': the local workers run no "
                             "tool-call parser; send tools to an expert that declares the 'tools' capability "
                             "('conclave experts list' shows them)", param="tools")


def json_mode(response_format: dict | None) -> tuple[str, dict | None] | None:
    """None for plain text, else ("json_object", None) or ("json_schema", schema); a schema-less
    json_schema counts as json_object (any JSON object will do)."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise InvalidRequest(f"response_format type {kind!r} is not one of text, json_object, json_schema",
                             param="response_format")
    schema = ((response_format or {}).get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    return ("json_schema", schema) if schema is not None else ("json_object", None)


def token_bias(expert: Expert, logit_bias: dict | None, vocab_size: int) -> dict[int, float]:
    """``logit_bias`` ({"token id": bias}) with int keys, each checked against the model's vocabulary."""
    out = {}
    for key, value in (logit_bias or {}).items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            token = -1
        if not 0 <= token < vocab_size:
            raise InvalidRequest(f"logit_bias key {key!r} is not a token id of expert {expert.name!r}'s "
                                 f"vocabulary (0-{vocab_size - 1})", param="logit_bias")
        out[token] = float(value)
    return out
