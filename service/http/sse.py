"""Server-sent events shared by the streaming endpoints (chat and legacy completions)."""

from __future__ import annotations

import json
import logging
from typing import AsyncIterator, Awaitable, Callable

from experts_registry.errors import ConclaveError

log = logging.getLogger("conclave.app")


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


async def relay(first, it, event_of: Callable, spend: Callable[[dict | None], Awaitable[None]], who: str,
                state: dict) -> AsyncIterator[str]:
    """One event per delta (``event_of(delta)``; None: nothing to send), starting with ``first``.
    A broken stream ends with an in-band error event (the caller then sends no [DONE]: never a silent
    truncation); whatever happens, the expert's stream is closed and its tokens are spent.  ``state``
    receives ``usage``, ``finish`` and ``ok`` (True when the stream ended normally)."""
    state.update(usage=None, finish="stop", ok=False)
    delta = first
    try:
        while delta is not None:
            event = event_of(delta)
            if event is not None:
                yield sse(event)
            state["usage"], state["finish"] = delta.usage or state["usage"], delta.finish_reason or state["finish"]
            delta = await anext(it, None)
        state["ok"] = True
    except ConclaveError as exc:
        yield sse(exc.to_body())
    except Exception:
        log.exception("stream from %s broke", who)
        yield sse(ConclaveError("internal error while streaming").to_body())
    finally:
        await it.aclose()   # the client left or the stream ended: stop the expert
        await spend(state["usage"])


async def relayed(first, it, event_of, spend, who: str, state: dict) -> AsyncIterator[str]:
    """:func:`relay`, closed at once when the client leaves (its ``finally`` runs then, not at GC)."""
    inner = relay(first, it, event_of, spend, who, state)
    try:
        async for line in inner:
            yield line
    finally:
        await inner.aclose()
