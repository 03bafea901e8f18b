"""``synthesis``: an aggregator LLM reads the candidates and writes one answer.

The prompt follows Symbolic-MoE's aggregator and Mixture-of-Agents'
aggregate-and-synthesise instruction: several models' responses, some possibly
wrong, to be evaluated critically and synthesised into one accurate answer; then
the question and the answer-format instruction.  Candidates are anonymous
("Response 1", ...), their hidden thinking is stripped and failed experts are
left out.  The plan is pure: the gateway makes the call (which expert aggregates
comes from the aggregation-ability profile, :mod:`aggregators.profile`).
"""

from __future__ import annotations

from typing import Sequence

from .base import Candidate, Final, Plan, Synthesize, base_detail, check_choices, survivors
from .extract import extract_answer, strip_thinking

INSTRUCTION = (
    "You have been provided with the responses of several models to the question below. "
    "Some of these responses may be wrong. Evaluate them critically: check their reasoning "
    "and facts instead of following the majority, and synthesise them into a single, "
    "accurate answer to the question. Do not simply copy one response, and do not mention "
    "the responses or the models in your answer.")


def format_instruction(choices: str | None) -> str:
    """How the final answer must be stated: 'The answer is (X)' for multiple choice."""
    if choices:
        options = ", ".join(choices)
        return ("Think step by step, then end your response with \"The answer is (X)\", "
                f"where X is the letter of the correct option ({options}).")
    return "Give one complete, self-contained answer to the question."


def clip(text: str, max_chars: int) -> str:
    """Shorten a long response, keeping its opening and (mostly) its conclusion."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    head = max_chars // 3
    tail = max_chars - head
    return f"{text[:head].rstrip()}\n[...]\n{text[-tail:].lstrip()}"


def synthesis_messages(question: str, answers: Sequence[str], choices: str | None = None,
                       *, max_chars: int = 4000) -> list[dict[str, str]]:
    """The aggregator's chat messages (one user turn: works with every chat template)."""
    blocks = [f"### Response {i}\n{clip(strip_thinking(a), max_chars)}" for i, a in enumerate(answers, 1)]
    content = "\n\n".join([INSTRUCTION, "Responses:", *blocks,
                           f"Question:\n{question.strip()}", format_instruction(choices)])
    return [{"role": "user", "content": content}]


class SynthesisAggregator:
    """Plan an LLM synthesis over the usable candidates; a lone survivor is returned as is."""

    name = "synthesis"

    def __init__(self, max_chars: int = 4000):
        self.max_chars = max_chars            # per candidate, to fit small experts' contexts

    def plan(self, question: str, candidates: Sequence[Candidate], *, choices: str | None = None) -> Plan:
        letters = check_choices(choices)
        alive = survivors(candidates)
        detail = base_detail(self.name, candidates)
        detail["answers"] = {c.expert: extract_answer(c.text, letters) for c in alive}
        if len(alive) == 1:
            detail.update(winner=alive[0].expert,
                          note="only one expert answered: its response is returned without synthesis")
            return Final(alive[0].text, alive[0].expert, detail)
        messages = synthesis_messages(question, [c.text for c in alive], letters, max_chars=self.max_chars)
        return Synthesize(messages, detail)
