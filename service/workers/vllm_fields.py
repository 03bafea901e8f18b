"""The OpenAI request fields a vLLM expert honours beyond sampling, as ``SamplingParams`` keywords.

Honoured: ``response_format`` (vLLM's structured outputs: ``json_object``, or ``json_schema`` with its
schema; the grammar backend is vLLM's own choice, xgrammar where it can), ``logprobs`` /
``top_logprobs`` (vLLM's sample logprobs), ``presence_penalty`` / ``frequency_penalty``, ``logit_bias``
(token ids of this model's vocabulary), ``user`` (nothing to do).  Refused with a 400 naming the field:
``tools`` unless ``tool_choice`` is ``"none"`` (the worker runs no tool-call parser).
"""

from __future__ import annotations

from experts_registry.model import Expert

from ..core.backend import GenParams
from .fields import json_mode, refuse_tools, token_bias


def sampling_fields(expert: Expert, params: GenParams, vocab_size: int) -> dict:
    """SamplingParams keywords for the fields above; InvalidRequest for what vLLM cannot do here."""
    refuse_tools(expert, params, "vLLM")
    fields: dict = {}
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(params, name) is not None:
            fields[name] = float(getattr(params, name))
    if params.logprobs:
        fields["logprobs"] = params.top_logprobs or 0
    if params.logit_bias:
        fields["logit_bias"] = token_bias(expert, params.logit_bias, vocab_size)
    structured = _structured(params.response_format)
    if structured is not None:
        fields["structured_outputs"] = structured
    return fields


def _structured(response_format: dict | None):
    mode = json_mode(response_format)
    if mode is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    kind, schema = mode
    return StructuredOutputsParams(json=schema) if kind == "json_schema" else StructuredOutputsParams(json_object=True)


def logprob_entries(token_ids, logprobs, top: int) -> list[dict] | None:
    """vLLM's sample logprobs (per position: {token id: Logprob}) as OpenAI ``logprobs.content`` entries."""
    if logprobs is None:
        return None
    entries = []
    for token, options in zip(token_ids, logprobs):
        chosen = options[token]
        ranked = sorted(options.items(), key=lambda kv: kv[1].rank or 0)[:top] if top else []
        entries.append({**_one(chosen), "top_logprobs": [_one(lp) for _, lp in ranked]})
    return entries


def _one(lp) -> dict:
    token = lp.decoded_token or ""
    return {"token": token, "logprob": float(lp.logprob), "bytes": list(token.encode())}
