"""POST /v1/chat/completions without FastAPI's per-request layers.

The hottest route is served by a plain ASGI wrapper that sits just inside ``AuthAndLimits`` (so keys,
body limits and request metrics still apply): it validates the body with the same pydantic model,
calls the same handler (``service/http/chat.py``) and renders errors through the same function as the
FastAPI exception handlers. What it skips is Starlette's routing and exception middleware and
FastAPI's request object, dependency solving and double body parsing: ``benchmarks/perf/bench_hotpath.py``
measures the difference. Every other route, and the OpenAPI description of this one, stays with
FastAPI. Unlike FastAPI's parser it reads the body as JSON whatever the Content-Type (``curl -d``
sends a form type).
"""

from __future__ import annotations

from pydantic import ValidationError

from experts_registry.errors import InvalidRequest
from starlette.datastructures import Headers

from ..core.metrics import Metrics
from ..core.protocol import ChatRequest
from .chat import ChatHandler
from .errors import from_errors, response_for

CHAT_PATH = "/v1/chat/completions"


class ChatFastPath:
    def __init__(self, app, handler: ChatHandler, metrics: Metrics):
        self.app = app
        self.handler = handler
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:
            return   # the client left before sending its request
        try:
            response = await self.handler(parse_chat(body), Headers(scope=scope), scope["conclave.principal"])
        except Exception as exc:   # noqa: BLE001 - every failure leaves as an OpenAI-style error body
            response = response_for(exc, self.metrics)
        await response(scope, receive, send)


def parse_chat(body: bytes) -> ChatRequest:
    if not body:   # FastAPI says the same of an empty body
        raise InvalidRequest("the request body must be a JSON object", code="invalid_body")
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        raise from_errors(exc.errors()) from None


async def read_body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
