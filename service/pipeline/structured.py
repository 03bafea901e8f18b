"""k > 1 when the answer is structured: tool calls or JSON (``response_format``).

The text aggregators (vote on an extracted final answer, synthesis by an LLM) do not fit an answer
that is a function call or a JSON document, so such requests are aggregated here, by a vote:

* ``tools``: each expert votes for what it did: the same tool calls (same names, same arguments as
  canonical JSON, in order) or "answered in text". The most voted wins; ties go to the best-ranked
  voter. The client gets the winning voter's whole answer (its tool calls, ``finish_reason``).
* ``response_format`` ``json_object`` / ``json_schema``: each answer that parses as JSON votes for its
  canonical form (sorted keys); answers that do not parse do not vote. None parses: 502 naming them.
* Refused (400): ``logprobs`` (an aggregated answer is not one model's tokens), the ``synthesis``
  aggregator (a judge's rewrite would not be any expert's call or document), and ``k: "auto"``
  (its stopping rule votes on extracted text answers).
"""

from __future__ import annotations

import json
from typing import AsyncIterator

from aggregators.base import Candidate
from experts_registry.errors import InvalidRequest, UpstreamError

from ..backends import Delta, GenParams, Generation
from ..core.openai_fields import canonical_json, indexed_calls, json_mode
from .fanout import Aggregation, add_usage, ask_each

VOTING = ("vote", "first")   # the aggregators whose meaning a structured vote keeps


def structured(params: GenParams, aggregator: str, adaptive: bool) -> bool:
    """True when this k > 1 request is aggregated here; InvalidRequest when it cannot be aggregated."""
    if params.logprobs:
        raise InvalidRequest("logprobs: an aggregated answer (k > 1) is not one model's tokens, so it has no "
                             "logprobs: ask one expert (its name, or conclave-auto with k = 1)", param="logprobs")
    if not (params.tools or json_mode(params)):
        return False
    field = "tools" if params.tools else "response_format"
    if adaptive:
        raise InvalidRequest(f"{field} with k = 'auto' is not supported: its stopping rule votes on text "
                             "answers; send a number for conclave.k", param="conclave.k")
    if aggregator not in VOTING:
        raise InvalidRequest(f"{field} with the {aggregator!r} aggregator is not supported: an aggregated "
                             f"tool call or JSON answer is chosen by vote (aggregator {' or '.join(VOTING)})",
                             param="conclave.aggregator")
    return True


async def ask_and_vote(call, experts, messages, params: GenParams) -> tuple[Aggregation, str, AsyncIterator[Delta]]:
    """(the aggregation's report, the winner's name, the winner's answer as a stream)."""
    results = await ask_each(call, experts, messages, params)
    usage = add_usage(*(g.usage for _, g in results if g is not None))
    name = "tool-call-vote" if params.tools else "json-vote"
    keys = {c.expert: vote_key(g, params) for c, g in results if g is not None}
    tally: dict[str, list[str]] = {}
    for c, _ in results:   # in the router's order: the first voter of a key is its best-ranked one
        if keys.get(c.expert) is not None:
            tally.setdefault(keys[c.expert], []).append(c.expert)
    failed = {c.expert: c.error or "no valid JSON" for c, _ in results if keys.get(c.expert) is None}
    if not tally:
        raise UpstreamError(f"none of the {len(results)} experts gave a usable answer ({json.dumps(failed)}): "
                            "retry, or ask one expert", expert=", ".join(failed))
    answer = max(tally, key=lambda k: len(tally[k]))   # max keeps the first of equals
    winner = tally[answer][0]
    gen = next(g for c, g in results if c.expert == winner)
    detail = {"aggregator": name, "votes": {k: len(v) for k, v in tally.items()}, "answer": answer,
              "winner": winner, "failed": failed}
    candidates = [Candidate(c.expert, c.text or _calls_text(g), c.score, c.error) for c, g in results]
    return Aggregation(name, candidates, detail, usage), winner, _replay(gen, usage)


def vote_key(gen: Generation, params: GenParams) -> str | None:
    """What an answer votes for: its tool calls (canonical), "text" (a tool request answered in text),
    its canonical JSON, or None (JSON mode and the text does not parse)."""
    if params.tools:
        if not gen.tool_calls:
            return "text"
        return json.dumps([[c["function"]["name"], canonical_json(c["function"]["arguments"])
                            or c["function"]["arguments"]] for c in gen.tool_calls], separators=(",", ":"))
    return canonical_json(gen.text)


def _calls_text(gen: Generation | None) -> str:
    return json.dumps(gen.tool_calls) if gen is not None and gen.tool_calls else ""


async def _replay(gen: Generation, usage: dict) -> AsyncIterator[Delta]:
    yield Delta(gen.text, tool_calls=indexed_calls(gen.tool_calls))
    yield Delta("", gen.finish_reason, usage)
