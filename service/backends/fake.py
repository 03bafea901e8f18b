"""A scripted backend for unit tests of the gateway's logic (never used in production).

The expert's ``model`` field picks the behaviour: ``echo`` (repeats the last
user turn), ``fail`` (raises before the first token), ``hang`` (never answers),
``midfail`` (fails after the first token), ``answer=X`` (a short reasoning
chain ending in "The answer is (X)."), ``say=TEXT`` (exactly TEXT).  A raw job (``/v1/completions``)
with echo or logprobs gets one Delta with scripted logprobs (:func:`_scored`).
"""

from __future__ import annotations

import asyncio

from experts_registry.errors import UpstreamError
from experts_registry.model import Expert

from ..core.backend import Delta, GenParams, usage_dict
from ..core.completions import entry
from ..core.prompting import text_of


class FakeBackend:
    def __init__(self, *_args, **_kw):
        self.calls: list[tuple[str, list[dict]]] = []

    async def stream(self, expert: Expert, messages: list[dict], params: GenParams):
        self.calls.append((expert.name, messages))
        behaviour = expert.model.split(":")[-1]
        if behaviour == "fail":
            raise UpstreamError(f"expert {expert.name!r} failed: scripted failure", expert=expert.name)
        if behaviour == "hang":
            await asyncio.sleep(3600)
        last = next((text_of(m) for m in reversed(messages) if m["role"] == "user"), "")
        text = f"{expert.name} says: {last}"
        if behaviour.startswith("say="):
            text = behaviour[4:]
        elif behaviour.startswith("answer="):
            text = f"Let me think step by step. The answer is ({behaviour[7:]})."
        words = text.split(" ")[: params.max_tokens]
        finish = "length" if len(words) == params.max_tokens else "stop"
        if params.raw and (params.echo or params.logprobs):   # /v1/completions scoring: one Delta
            yield _scored(last, [w if i == 0 else " " + w for i, w in enumerate(words)], params)
            yield Delta("", finish, usage_dict(len(last.split()), len(words)))
            return
        for i, word in enumerate(words):
            yield Delta(word if i == 0 else " " + word)
            if behaviour == "midfail":
                raise UpstreamError(f"expert {expert.name!r} broke mid-stream", expert=expert.name)
        yield Delta("", finish, usage_dict(len(last.split()), len(words)))

    async def close(self) -> None:
        return None


def _scored(prompt: str, pieces: list[str], params: GenParams) -> Delta:
    """Echo and logprobs, scripted: every piece (the whole prompt, then each word) a "token" of logprob
    -1.0; an echoed prompt's first token has none, as OpenAI's."""
    pieces = ([prompt] if params.echo else []) + pieces
    found, at = [], 0 if params.echo else len(prompt)
    for i, piece in enumerate(pieces):
        lp = None if params.echo and i == 0 else -1.0
        found.append(entry(piece, lp, None if lp is None else {piece: lp}, at))
        at += len(piece)
    return Delta("".join(pieces), logprobs=found if params.logprobs else None)
