"""k > 1: ask several experts at once, then let an aggregator decide the final answer.

The k expert calls run concurrently, each under the per-expert deadline; a
failed or late expert becomes a :class:`Candidate` with ``error`` set, so the
aggregator works with the survivors (and says who failed).  A ``Final`` plan
returns the winner's text; a ``Synthesize`` plan streams an aggregator LLM's
answer, chosen by the aggregation-ability profile when one was built.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncIterator

from aggregators import AGGREGATORS
from aggregators.base import Candidate, Final
from experts_registry.errors import ConclaveError, InvalidRequest
from experts_registry.model import Expert

from ..backends import Delta, GenParams, Generation, collect, usage_dict


@dataclass
class Aggregation:
    aggregator: str
    candidates: list[Candidate]
    detail: dict
    usage: dict = field(default_factory=lambda: usage_dict(0, 0))
    aggregated_by: str | None = None

    def info(self, with_texts: bool) -> dict:
        info = {**self.detail, "aggregator": self.aggregator, "aggregated_by": self.aggregated_by}
        if with_texts:
            info["candidates"] = [{"expert": c.expert, "text": c.text, "error": c.error, "score": c.score}
                                  for c in self.candidates]
        return info


def aggregator(name: str):
    if name not in AGGREGATORS:
        raise InvalidRequest(f"unknown aggregator {name!r}; available: {', '.join(sorted(AGGREGATORS))}",
                             param="aggregator")
    return AGGREGATORS[name]()


async def ask_all(call, experts: list[tuple[Expert, float]], messages: list[dict],
                  params: GenParams) -> tuple[list[Candidate], dict]:
    """Every expert at once; ``call(expert, messages, params)`` is the gateway's guarded stream."""
    results = await ask_each(call, experts, messages, params)
    return [c for c, _ in results], add_usage(*(g.usage for _, g in results if g is not None))


async def ask_each(call, experts: list[tuple[Expert, float]], messages: list[dict],
                   params: GenParams) -> list[tuple[Candidate, Generation | None]]:
    """Every expert at once: each one's Candidate and whole Generation (None when it failed)."""
    async def one(expert: Expert, score: float):
        try:
            gen = await collect(call(expert, messages, params))
            return Candidate(expert.name, gen.text, score), gen
        except ConclaveError as exc:
            return Candidate(expert.name, "", score, error=exc.message), None

    return list(await asyncio.gather(*(one(e, s) for e, s in experts)))


def add_usage(*usages: dict) -> dict:
    return usage_dict(sum(u.get("prompt_tokens", 0) for u in usages if u),
                      sum(u.get("completion_tokens", 0) for u in usages if u))


async def final_text(plan: Final, usage: dict) -> AsyncIterator[Delta]:
    yield Delta(plan.text)
    yield Delta("", "stop", usage)


async def plus_usage(chunks: AsyncIterator[Delta], extra: dict) -> AsyncIterator[Delta]:
    """The aggregator's stream, with the candidates' tokens added to its final usage."""
    async for d in chunks:
        if d.usage is not None:
            d = Delta(d.text, d.finish_reason, add_usage(d.usage, extra))
        yield d
