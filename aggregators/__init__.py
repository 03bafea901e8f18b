"""Aggregators: pure plans that turn k experts' responses into one answer.

``AGGREGATORS`` maps a name to a factory ``f(**options) -> Aggregator``; each
aggregator's ``plan(question, candidates, *, choices=None)`` returns
:class:`Final` or :class:`Synthesize` (see :mod:`aggregators.base`).
"""

from __future__ import annotations

from .base import Aggregator, Candidate, Final, Plan, Synthesize
from .extract import extract_answer, extract_choice, extract_number, strip_thinking
from .first import FirstAggregator
from .synthesis import SynthesisAggregator, synthesis_messages
from .vote import VoteAggregator

AGGREGATORS = {
    "first": FirstAggregator,
    "vote": VoteAggregator,
    "synthesis": SynthesisAggregator,
}

__all__ = ["AGGREGATORS", "Aggregator", "Candidate", "Final", "Plan", "Synthesize",
           "FirstAggregator", "VoteAggregator", "SynthesisAggregator", "synthesis_messages",
           "extract_answer", "extract_choice", "extract_number", "strip_thinking"]
