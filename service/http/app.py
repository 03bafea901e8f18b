"""The FastAPI application: OpenAI-compatible routes over :class:`~service.pipeline.gateway.Gateway`."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from experts_registry import offer_bundled, open_store

from ..backends import BackendPool
from ..core.config import Settings, load_settings
from ..core.protocol import ChatRequest
from ..pipeline.gateway import VIRTUAL_MODELS, Gateway
from .admin import admin_routes
from .auth import Authenticator, Principal, require_admin
from .chat import ChatHandler
from .errors import install_error_handlers
from .fastpath import ChatFastPath
from .middleware import AuthAndLimits
from .ratelimit import RateLimiter
from .shutdown import MARGIN_S, on_shutdown_signal

log = logging.getLogger("conclave.app")


def create_app(settings: Settings | None = None, gateway: Gateway | None = None,
               fast_path: bool = True) -> FastAPI:
    settings = settings or load_settings()
    if gateway is None:
        store = open_store(settings.home, settings.redis_url, settings.redis_prefix)
        offer_bundled(store)
        gateway = Gateway(settings, store, BackendPool(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(gateway.routers.warm)  # the configured router and its encoder, or fail now
        kinds = {gateway.backends.kind_for(e) for e in gateway.store.list()}
        if "litellm" in kinds:
            await asyncio.to_thread(gateway.backends.get, "litellm")  # pay litellm's import before traffic
        if "openai" in kinds:
            await asyncio.to_thread(__import__, "aiohttp")   # ... and the lean client's
        gc.collect()
        gc.freeze()   # what start-up built lives as long as the server: full collections skip it
        def drain() -> None:   # SIGTERM: requests waiting on the Redis queue get a 503 before the grace ends
            gateway.drain(time.monotonic() + max(0.0, settings.shutdown_grace - MARGIN_S))

        restore = on_shutdown_signal(drain)
        yield
        restore()
        await gateway.backends.close()

    # FastAPI's native OpenTelemetry checks the global providers on every request (8 us here, even when
    # none is configured): on only when asked for (CONCLAVE_OTEL); Prometheus metrics are always on
    otel = {} if settings.otel else {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="Conclave", version="0.1.0", lifespan=lifespan, telemetry=otel,
                  description="OpenAI-compatible gateway composing whole expert LLMs.")
    app.state.gateway = gateway
    gateway.metrics.watch_schedulers(gateway.backends.stats)
    if settings.sched_queue == "redis":
        from ..scheduler.placement import report_source

        gateway.metrics.watch_placement(report_source(settings.redis_url, settings.redis_prefix))
    auth = Authenticator(settings, gateway.store)
    install_error_handlers(app, gateway.metrics)
    handler = ChatHandler(gateway, RateLimiter(settings.redis_url, settings.redis_prefix))
    if fast_path:   # inside AuthAndLimits: keys, body limits and request metrics apply to it too
        app.add_middleware(ChatFastPath, handler=handler, metrics=gateway.metrics)
    app.add_middleware(AuthAndLimits, settings=settings, metrics=gateway.metrics, auth=auth)
    _routes(app, gateway, auth, handler)
    app.include_router(admin_routes(gateway, settings))
    return app


def principal(request: Request) -> Principal:
    return request.scope["conclave.principal"]


def _routes(app: FastAPI, gw: Gateway, auth: Authenticator, handler: ChatHandler) -> None:
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "store": gw.store.describe().split(":", 1)[0]}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if auth.required():
            require_admin(principal(request))
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        who, now = principal(request), int(time.time())
        data = [{"id": name, "object": "model", "created": now, "owned_by": "conclave", "description": text}
                for name, text in VIRTUAL_MODELS.items()]
        data += [{"id": e.name, "object": "model", "created": now, "owned_by": "conclave",
                  "backend": e.backend, "prompt_style": e.prompt_style, "skills": list(e.skills)}
                 for e in gw.store.list()]
        return {"object": "list", "data": [m for m in data if who.allows(m["id"])]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Response:
        # served by the ASGI fast path (service/http/fastpath.py); this route describes it in the OpenAPI
        # schema, and serves it when the app is built with fast_path=False
        return await handler(req, request.headers, principal(request))


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (used by ``conclave serve``)."""
    return create_app(load_settings())
