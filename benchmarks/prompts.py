"""Benchmark prompts and scoring: one chat message list serves chat and completion experts.

    messages_for(q, shots=2)        few-shot: exemplar user turn, "The answer is (X)." reply, ...
    messages_for(q, cot=True)       zero-shot chain of thought
    score(q, text) -> (letter or None, correct)

Exemplar turns are the question and its lettered options only (no trailing "Answer:"):
a completion expert's template adds its own answer cue (the bundled Gemma renders
``Question: ...\\nA. ...\\nAnswer: The answer is (B).``), and a chat expert gets the
reply as the assistant turn.  The final turn ends with the format instruction unless
few-shot examples already show the format.  Scoring uses the vote aggregator's extraction.
"""

from __future__ import annotations

from aggregators.extract import choice_letters, extract_answer

from .datasets import Question, exemplars

ANSWER = "The answer is ({letter})."
INSTRUCTION = "Answer with 'The answer is (X)', where X is the letter of the correct option."
COT_INSTRUCTION = "Think step by step, then finish with 'The answer is (X)'."


def format_question(q: Question) -> str:
    """The question, then one lettered option per line."""
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(q.letters, q.choices))
    return f"{q.question}\n{options}"


def messages_for(q: Question, shots: int = 0, cot: bool = False) -> list[dict]:
    """OpenAI chat messages asking ``q``, after ``shots`` solved exemplars."""
    messages: list[dict] = []
    for e in exemplars(q, shots):
        messages.append({"role": "user", "content": format_question(e)})
        messages.append({"role": "assistant", "content": ANSWER.format(letter=e.answer)})
    final = format_question(q)
    if cot:
        final += "\n" + COT_INSTRUCTION
    elif not messages:
        final += "\n" + INSTRUCTION
    messages.append({"role": "user", "content": final})
    return messages


def score(q: Question, text: str | None) -> tuple[str | None, bool]:
    """(extracted letter or None, correct): the same extraction as the ``vote`` aggregator."""
    letter = extract_answer(text, choice_letters(len(q.choices)))
    return letter, letter is not None and letter == q.answer
