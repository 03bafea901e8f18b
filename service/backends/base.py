"""The backend seam: something that turns a prompt into tokens for one expert.

A backend implements one async generator, :meth:`Backend.stream`, yielding
:class:`Delta` pieces; the last one carries ``finish_reason`` and ``usage``.
Non-streaming callers use :func:`collect`.  Backends raise errors from the
error tree (``UpstreamError`` naming the expert, ``ExpertUnavailable``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol

from experts_registry.model import Expert


@dataclass(frozen=True)
class GenParams:
    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Delta:
    text: str = ""
    finish_reason: str | None = None
    usage: dict | None = None


@dataclass
class Generation:
    text: str
    finish_reason: str
    usage: dict = field(default_factory=dict)


class Backend(Protocol):
    def stream(self, expert: Expert, messages: list[dict], params: GenParams) -> AsyncIterator[Delta]: ...

    async def close(self) -> None: ...


async def collect(chunks: AsyncIterator[Delta]) -> Generation:
    parts, finish, usage = [], "stop", {}
    async for d in chunks:
        parts.append(d.text)
        finish = d.finish_reason or finish
        usage = d.usage or usage
    return Generation("".join(parts), finish, usage)


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
