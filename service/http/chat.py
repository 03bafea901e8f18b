"""POST /v1/chat/completions: the one handler behind the ASGI fast path (``service/http/fastpath.py``)
and the FastAPI route that describes it (``service/http/app.py``)."""

from __future__ import annotations

from typing import Mapping

from starlette.responses import JSONResponse, Response, StreamingResponse

from experts_registry.errors import InvalidRequest

from ..core.idempotency import ticket_for
from ..core.protocol import ChatRequest, chunk_body, completion_body, new_id
from ..pipeline.gateway import Gateway
from .auth import Principal
from .ratelimit import RateLimiter
from .sse import relayed, sse


class ChatHandler:
    def __init__(self, gateway: Gateway, limiter: RateLimiter):
        self.gw = gateway
        self.limiter = limiter

    async def __call__(self, req: ChatRequest, headers: Mapping[str, str], who: Principal) -> Response:
        bad = req.forbidden_fields()
        if bad:
            raise InvalidRequest(f"field {bad[0]!r} is not accepted: the gateway decides where traffic goes",
                                 param=bad[0])
        who.check_model(req.model)
        limits = await self.limiter.admit(who)

        async def spend(usage: dict | None) -> None:
            await self.limiter.spend_tokens(who, (usage or {}).get("total_tokens", 0))

        ticket = ticket_for(headers, who.key_id, req)
        if req.stream:
            return await _stream(self.gw, req, who, spend, ticket, limits)
        routed, gen = await self.gw.complete(req, allowed=who.models, ticket=ticket)
        await spend(gen.usage)
        body = completion_body(new_id(), routed.expert.name, gen.text, gen.finish_reason, gen.usage, routed.info(),
                               gen.tool_calls, gen.logprobs)
        return JSONResponse(body, headers={**_headers(routed), **limits})


async def _stream(gw: Gateway, req: ChatRequest, who: Principal, spend, ticket=None, limits=None) -> Response:
    routed, chunks = await gw.open_stream(req, allowed=who.models, ticket=ticket)
    it = chunks.__aiter__()
    try:
        first = await it.__anext__()  # errors before the first token still get a proper status
    except StopAsyncIteration:
        first = None
    rid, model, info = new_id(), routed.expert.name, routed.info()

    def event_of(delta):
        if delta.text or delta.tool_calls or delta.logprobs:
            return chunk_body(rid, model, _delta_body(delta), None, {"expert": model}, logprobs=delta.logprobs)
        return None

    async def events():
        yield _sse(chunk_body(rid, model, {"role": "assistant", "content": ""}, None, info))
        state: dict = {}
        async for line in relayed(first, it, event_of, spend, model, state):
            yield line
        if not state["ok"]:
            return
        yield _sse(chunk_body(rid, model, {}, state["finish"], {"expert": model}))
        if req.include_usage() and state["usage"]:
            yield _sse({**chunk_body(rid, model, {}, None, {"expert": model}), "choices": [], "usage": state["usage"]})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={**_headers(routed), **(limits or {})})


def _delta_body(delta) -> dict:
    """A chunk's ``delta``: the text, and tool-call pieces in OpenAI's streamed shape (with ``index``)."""
    body = {"content": delta.text} if delta.text or not delta.tool_calls else {}
    if delta.tool_calls:
        body["tool_calls"] = delta.tool_calls
    return body


_sse = sse


def _headers(routed) -> dict:
    headers = {"x-conclave-expert": routed.expert.name}
    if routed.decision is not None:
        headers["x-conclave-router"] = routed.decision.router
        headers["x-conclave-route"] = routed.decision.reason.encode("ascii", "replace").decode()[:500]
    if routed.aggregation is not None:
        headers["x-conclave-aggregator"] = routed.aggregation.aggregator
        headers["x-conclave-candidates"] = ",".join(c.expert for c in routed.aggregation.candidates)
        headers["x-conclave-calls"] = str(len(routed.aggregation.candidates))
    return headers
