"""The aggregator seam.

An aggregator is pure: given the question and the k experts' responses
(:class:`Candidate`), ``plan()`` decides what the client gets, without I/O and
without calling a model.  It returns either

* :class:`Final` - the answer is decided; ``winner`` names the expert whose
  response is returned as is, or
* :class:`Synthesize` - the gateway must call an aggregator LLM with
  ``messages`` and stream its output as the final answer.

Both carry ``detail``, a JSON-able dict explaining the decision (answers per
expert, votes, failed experts, ...), which the gateway adds to its explanation.
When no candidate is usable, ``plan()`` raises :class:`UpstreamError` naming
every failed expert (the gateway answers 502).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from experts_registry.errors import InvalidRequest, UpstreamError


@dataclass(frozen=True)
class Candidate:
    expert: str
    text: str
    score: float                      # the router's score for this expert (higher is better)
    error: str | None = None          # why the expert failed or timed out; None when it answered

    @property
    def usable(self) -> bool:
        """Answered without error and said something."""
        return self.error is None and bool(self.text and self.text.strip())


@dataclass(frozen=True)
class Final:
    text: str
    winner: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Synthesize:
    messages: list[dict[str, str]]
    detail: dict[str, Any] = field(default_factory=dict)


Plan = Final | Synthesize


class Aggregator(Protocol):
    name: str

    def plan(self, question: str, candidates: Sequence[Candidate], *,
             choices: str | None = None) -> Plan: ...


def ranked(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Usable candidates, best router score first (the router's order breaks ties)."""
    usable = [c for c in candidates if c.usable]
    return sorted(usable, key=lambda c: -c.score)   # sorted() is stable


def failures(candidates: Sequence[Candidate]) -> dict[str, str]:
    """``{expert: reason}`` for every candidate that cannot be used."""
    return {c.expert: c.error or "empty response" for c in candidates if not c.usable}


def survivors(candidates: Sequence[Candidate]) -> list[Candidate]:
    """:func:`ranked`, or UpstreamError naming every expert and why it failed."""
    alive = ranked(candidates)
    if alive:
        return alive
    if not candidates:
        raise UpstreamError("no expert answered: the aggregator was given no candidates")
    failed = failures(candidates)
    reasons = "; ".join(f"{name}: {why}" for name, why in failed.items())
    raise UpstreamError(f"all {len(failed)} experts failed ({reasons}); retry, raise "
                        "CONCLAVE_EXPERT_TIMEOUT, or choose other experts", expert=", ".join(failed))


def check_choices(choices: str | None) -> str | None:
    """Validate the option letters of a multiple-choice question ("ABCD"); None = not multiple choice."""
    if choices is None:
        return None
    letters = choices.strip().upper()
    if not re.fullmatch(r"[A-Z]{2,26}", letters) or len(set(letters)) != len(letters):
        raise InvalidRequest(f"choices must be the option letters of the question, e.g. 'ABCD', "
                             f"not {choices!r}", param="choices")
    return letters


def base_detail(name: str, candidates: Sequence[Candidate]) -> dict[str, Any]:
    """What every aggregator reports: its name, who answered, who failed and why."""
    return {"aggregator": name,
            "experts": [c.expert for c in ranked(candidates)],
            "failed": failures(candidates)}
