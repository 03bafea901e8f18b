"""Pure ASGI middleware: who is calling (API keys), bounded request bodies, request metrics.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched
and the checks run on every request, async path included.
"""

from __future__ import annotations

import json
import re
import time
import uuid

from experts_registry.errors import AuthenticationError, ConclaveError, PayloadTooLarge

from ..core.config import Settings
from ..core.metrics import Metrics
from ..core.redis_retry import is_redis_down, unavailable
from .auth import Authenticator
from .errors import error_headers
from .ui import REALM, browser_authorization, is_ui

OPEN_PATHS = {"/health", "/health/liveness", "/health/readiness", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}  # the API description is public
KNOWN_ROUTES = {"/v1/chat/completions", "/v1/completions", "/ui/api/chat", "/v1/models", "/health", "/health/liveness",
                "/health/readiness", "/metrics"}
REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,200}$")   # a client's own x-request-id, if it is sane


class AuthAndLimits:
    def __init__(self, app, settings: Settings, metrics: Metrics, auth: Authenticator):
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.auth = auth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]
        path = scope["path"]
        route = path if path in KNOWN_ROUTES else route_label(path)
        rid = request_id(scope)

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid)]}
            await send(message)

        inflight = self.metrics.child(self.metrics.inflight, route)
        inflight.inc()
        try:
            try:
                self._authorise(scope)
                receive = await self._bounded_body(scope, receive)
            except ConclaveError as exc:  # nothing was sent yet: answer here
                challenge = REALM if is_ui(scope["path"]) else b"Bearer"   # a browser asks for a Basic key
                return await _send_error(send_wrapped, exc, self.metrics, challenge)
            except Exception as exc:  # the key store (Redis) does not answer: 503, not a 500
                if not is_redis_down(exc):
                    raise
                return await _send_error(send_wrapped, unavailable(exc), self.metrics)
            await self.app(scope, receive, send_wrapped)
        finally:
            inflight.dec()
            self.metrics.child(self.metrics.requests, route, str(status[0])).inc()
            self.metrics.child(self.metrics.latency, route).observe(time.perf_counter() - t0)

    def _authorise(self, scope) -> None:
        """Resolve the caller into ``scope["conclave.principal"]`` (routes check what it may do)."""
        if scope["path"] in OPEN_PATHS:
            return
        header = dict(scope["headers"]).get(b"authorization")
        value = header.decode("latin-1") if header else None
        if scope["path"].startswith("/ui") and is_ui(scope["path"]):
            value = browser_authorization(value)
        scope["conclave.principal"] = self.auth.authenticate(value)

    async def _bounded_body(self, scope, receive):
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return receive
        limit = self.settings.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes (CONCLAVE_MAX_BODY_BYTES)")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _replay([message])
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes (CONCLAVE_MAX_BODY_BYTES)")
            if not message.get("more_body"):
                break
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)


def route_label(path: str) -> str:
    """The ``route`` label of the request metrics for a path outside KNOWN_ROUTES: its area."""
    if path.startswith("/admin/"):
        return "/admin"
    return "/ui" if is_ui(path) else "other"


def request_id(scope) -> bytes:
    """The client's ``x-request-id`` when it sent a sane one, else a new one; set on every response."""
    theirs = dict(scope["headers"]).get(b"x-request-id")
    rid = theirs if theirs is not None and REQUEST_ID.match(theirs) else f"req_{uuid.uuid4().hex}".encode()
    scope["conclave.request_id"] = rid.decode()
    return rid


def _replay(messages, then=None):
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}
    return receive


async def _send_error(send, exc: ConclaveError, metrics: Metrics, challenge: bytes = b"Bearer") -> None:
    metrics.errors.labels(exc.type).inc()
    body = json.dumps(exc.to_body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(exc).items()]
    if isinstance(exc, AuthenticationError):
        headers.append((b"www-authenticate", challenge))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
