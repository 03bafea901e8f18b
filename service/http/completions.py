"""POST /v1/completions: OpenAI's legacy text completion (``object: "text_completion"``), with ``logprobs``
and ``echo`` (prompt scoring for evaluation harnesses), over ``service/pipeline/completions.py``.

Same key checks, rate limits, metrics and error bodies as chat; every request-validation error is a 400
``invalid_request_error`` naming the field.  A batch of prompts gets one choice per prompt (run
concurrently, so local experts batch them); ``stream`` takes one prompt.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response, StreamingResponse

from experts_registry.errors import InvalidRequest, ValidationFailed

from ..core.completions import CompletionRequest, choice, forbidden_fields, new_completion_id, text_completion_body
from ..core.backend import usage_dict
from ..core.idempotency import HEADER
from ..pipeline import completions as pipeline
from ..pipeline.gateway import Gateway
from .auth import Principal
from .chat import _headers as routing_headers
from .errors import from_errors
from .ratelimit import RateLimiter
from .sse import relayed, sse as _sse

PATH = "/v1/completions"
TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}
PROMPT_SHAPES = "send a string, a list of strings, a list of token ids (non-negative integers) or a list of them"


def completion_routes(gw: Gateway, limiter: RateLimiter) -> APIRouter:
    router = APIRouter()
    handler = CompletionHandler(gw, limiter)
    body = {"required": True, "content": {"application/json": {"schema": _schema()}}}

    @router.post(PATH, openapi_extra={"requestBody": body})
    async def completions(request: Request) -> Response:
        if HEADER in request.headers:   # never accepted and then ignored: a retry would run again
            raise InvalidRequest(f"the {HEADER} header is not supported on {PATH} (a retried completion runs "
                                 f"again): send the request without it", param=HEADER, code="unsupported_header")
        return await handler(parse(await request.body()), request.scope["conclave.principal"])

    return router


def _schema() -> dict:
    schema = CompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)   # ConclaveOptions is already a component (the chat request uses it)
    return schema


def parse(raw: bytes) -> CompletionRequest:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    bad = forbidden_fields(body)
    if bad:
        raise InvalidRequest(f"field {bad[0]!r} is not accepted: the gateway decides where traffic goes", param=bad[0])
    try:
        req = CompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc.errors()) from None
    pipeline.check(req)
    return req


def _invalid(errors: list) -> InvalidRequest:
    """A schema violation as a 400 naming the field, as OpenAI does (pydantic's union branches, such as
    ``prompt.list[int]``, left out of the name)."""
    first = errors[0]
    loc = [p for p in first.get("loc", ()) if not (isinstance(p, str) and (p in TYPE_TAGS or "[" in p))]
    err = from_errors([{**first, "loc": tuple(loc)}])
    if first.get("type") == "extra_forbidden":
        return InvalidRequest(f"{err.param}: /v1/completions does not take this field (it is refused rather "
                              "than ignored): drop it", param=err.param)
    if loc and loc[0] == "prompt" and first.get("type") != "value_error":
        return InvalidRequest(f"prompt: {PROMPT_SHAPES}", param="prompt")
    return InvalidRequest(err.message, param=err.param) if isinstance(err, ValidationFailed) else err


class CompletionHandler:
    def __init__(self, gateway: Gateway, limiter: RateLimiter):
        self.gw = gateway
        self.limiter = limiter

    async def __call__(self, req: CompletionRequest, who: Principal) -> Response:
        who.check_model(req.model)
        gen = pipeline.params(self.gw.settings, req)
        limits = await self.limiter.admit(who)
        if req.stream:
            return await self._stream(req, gen, who, limits)
        prompts = req.prompts()
        answers = await asyncio.gather(*(pipeline.complete(self.gw, req, p, gen, who.models) for p in prompts))
        usage = _total([g.usage for _, g in answers])
        await self.limiter.spend_tokens(who, usage["total_tokens"])
        experts = [r.expert.name for r, _ in answers]
        model = experts[0] if len(set(experts)) == 1 else req.model
        info = answers[0][0].info() if len(answers) == 1 else {"choices": [r.info() for r, _ in answers]}
        body = text_completion_body(new_completion_id(), model,
                                    [choice(i, g.text, g.logprobs, g.finish_reason) for i, (_, g) in enumerate(answers)],
                                    usage, info)
        return JSONResponse(body, headers={**routing_headers(answers[0][0]), **limits})

    async def _stream(self, req: CompletionRequest, gen, who: Principal, limits: dict) -> Response:
        routed, chunks = await pipeline.open_completion(self.gw, req, req.prompts()[0], gen, who.models)
        it = chunks.__aiter__()
        first = await anext(it, None)   # errors before the first token still get a proper status
        rid, model = new_completion_id(), routed.expert.name
        info, limiter = routed.info(), self.limiter

        async def spend(usage: dict | None) -> None:
            await limiter.spend_tokens(who, (usage or {}).get("total_tokens", 0))

        def event_of(delta):
            if delta.text or delta.logprobs:
                return text_completion_body(rid, model, [choice(0, delta.text, delta.logprobs, None)], None, info)
            return None

        async def events():
            state: dict = {}
            async for line in relayed(first, it, event_of, spend, model, state):
                yield line
            if not state["ok"]:
                return
            yield _sse(text_completion_body(rid, model, [choice(0, "", None, state["finish"])], None, info))
            if req.include_usage() and state["usage"]:
                yield _sse(text_completion_body(rid, model, [], state["usage"], info))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={**routing_headers(routed), **limits})


def _total(usages: list[dict]) -> dict:
    return usage_dict(sum(u.get("prompt_tokens", 0) for u in usages), sum(u.get("completion_tokens", 0) for u in usages))
