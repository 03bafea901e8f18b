"""A scripted backend for unit tests of the gateway's logic (never used in production).

The expert's ``model`` field picks the behaviour: ``echo`` (repeats the last
user turn), ``fail`` (raises before the first token), ``hang`` (never answers),
``midfail`` (fails after the first token), ``answer=X`` (a short reasoning
chain ending in "The answer is (X)."), ``say=TEXT`` (exactly TEXT).
"""

from __future__ import annotations

import asyncio

from experts_registry.errors import UpstreamError
from experts_registry.model import Expert

from ..core.backend import Delta, GenParams, usage_dict
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
        for i, word in enumerate(words):
            yield Delta(word if i == 0 else " " + word)
            if behaviour == "midfail":
                raise UpstreamError(f"expert {expert.name!r} broke mid-stream", expert=expert.name)
        yield Delta("", "length" if len(words) == params.max_tokens else "stop", usage_dict(len(last.split()), len(words)))

    async def close(self) -> None:
        return None
