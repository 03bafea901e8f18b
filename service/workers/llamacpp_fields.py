"""The OpenAI request fields a llama.cpp expert honours beyond sampling, and those it refuses.

Honoured: ``response_format`` (``json_object``: llama.cpp's JSON grammar; ``json_schema``: a grammar
built from the schema by llama-cpp-python's converter), ``logprobs`` / ``top_logprobs`` (read from the
model's logits at each step, before any bias or penalty), ``presence_penalty`` / ``frequency_penalty``
(llama.cpp's penalty sampler, over the last 64 tokens), ``logit_bias`` (token ids of this model's
vocabulary), ``user`` (nothing to do).  Refused with a 400 naming the field: ``tools`` unless
``tool_choice`` is ``"none"`` (no tool-call parser here); a schema the grammar converter cannot express.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from experts_registry.errors import InvalidRequest
from experts_registry.model import Expert

from ..core.backend import GenParams
from .fields import json_mode, refuse_tools, token_bias


@dataclass
class Options:
    grammar: object | None = None
    logprobs: int | None = None         # None: none wanted; else how many alternatives per token (0-20)
    bias: dict[int, float] = field(default_factory=dict)
    penalties: dict[str, float] = field(default_factory=dict)


def options(llm, expert: Expert, params: GenParams) -> Options:
    """What the request asks of llama.cpp; InvalidRequest (400, naming the field) for what it cannot do."""
    refuse_tools(expert, params, "llama.cpp")
    penalties = {name: float(v) for name in ("presence_penalty", "frequency_penalty")
                 if (v := getattr(params, name)) is not None}
    return Options(grammar=grammar(expert, params.response_format),
                   logprobs=(params.top_logprobs or 0) if params.logprobs else None,
                   bias=token_bias(expert, params.logit_bias, llm.n_vocab()), penalties=penalties)


def grammar(expert: Expert, response_format: dict | None):
    """A LlamaGrammar for JSON mode, or None for plain text."""
    mode = json_mode(response_format)
    if mode is None:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    kind, schema = mode
    if kind == "json_object":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception as exc:  # the converter raises on what it cannot express (e.g. remote $ref)
        raise InvalidRequest(f"expert {expert.name!r} (llama.cpp) cannot turn this JSON schema into a "
                             f"grammar: {exc}", param="response_format") from None


class Logits:
    """llama-cpp-python logits processor: records each step's log-probabilities (when logprobs are
    wanted), then adds the logit bias.  It runs first in the sampler chain, on the raw logits."""

    def __init__(self, opts: Options):
        self.keep = opts.logprobs is not None
        self.ids = np.fromiter(opts.bias, dtype=np.intc, count=len(opts.bias))
        self.values = np.fromiter(opts.bias.values(), dtype=np.single, count=len(opts.bias))
        self.last: np.ndarray | None = None

    def __call__(self, input_ids, logits):
        if self.keep:
            shifted = logits - np.max(logits)
            self.last = shifted - np.log(np.sum(np.exp(shifted)))
        if len(self.ids):
            logits[self.ids] += self.values
        return logits


def entry(llm, row: np.ndarray, token: int, piece: bytes, top: int) -> dict:
    """One ``choices[].logprobs.content`` entry in OpenAI's shape, for the sampled ``token``."""
    alternatives = []
    if top:
        best = np.argpartition(-row, top)[:top]
        for i in best[np.argsort(-row[best])]:
            raw = llm.detokenize([int(i)])
            alternatives.append({"token": raw.decode("utf-8", errors="replace"),
                                 "logprob": float(row[i]), "bytes": list(raw)})
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": float(row[token]),
            "bytes": list(piece), "top_logprobs": alternatives}
