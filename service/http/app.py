"""The FastAPI application: OpenAI-compatible routes over :class:`~service.pipeline.gateway.Gateway`."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from experts_registry import offer_bundled, open_store
from experts_registry.errors import ConclaveError, ModelNotFound

from ..backends import BackendPool, shared_backends
from ..core.config import Settings, load_settings
from ..core.protocol import ChatRequest
from ..core.redis_retry import require_persistence
from ..pipeline.gateway import VIRTUAL_MODELS, Gateway
from .admin import admin_routes
from .auth import Authenticator, Principal, require_admin
from .chat import ChatHandler
from .completions import completion_routes
from .errors import install_error_handlers
from .fastpath import ChatFastPath
from .middleware import AuthAndLimits
from .ratelimit import RateLimiter
from .shutdown import MARGIN_S, on_shutdown_signal
from .ui import install_ui

log = logging.getLogger("conclave.app")
READY_TIMEOUT_S = 2.0


def create_app(settings: Settings | None = None, gateway: Gateway | None = None,
               fast_path: bool = True, shared: bool = False) -> FastAPI:
    """The app; ``shared``: one of several server processes, which load no model (``shared_backends``)."""
    settings = settings or load_settings()
    if gateway is None:
        store = open_store(settings.home, settings.redis_url, settings.redis_prefix)
        check_store_durable(store, settings)
        offer_bundled(store)
        gateway = Gateway(settings, store, BackendPool(settings, shared_backends(settings) if shared else None))

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
        gateway.metrics.close()

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
    app.include_router(completion_routes(gateway, handler.limiter))   # /v1/completions, same limits as chat
    app.include_router(admin_routes(gateway, settings))
    install_ui(app, gateway, settings, auth, handler)
    return app


def principal(request: Request) -> Principal:
    return request.scope["conclave.principal"]


def _routes(app: FastAPI, gw: Gateway, auth: Authenticator, handler: ChatHandler) -> None:
    @app.get("/health")
    @app.head("/health", include_in_schema=False)
    async def health() -> dict:
        return {"status": "ok", "store": gw.store.describe().split(":", 1)[0]}

    @app.get("/health/liveness")
    @app.head("/health/liveness", include_in_schema=False)
    async def liveness() -> dict:
        return {"status": "ok"}

    @app.get("/health/readiness")
    @app.head("/health/readiness", include_in_schema=False)
    async def readiness() -> Response:
        reasons = await not_ready(gw)
        body = {"status": "not ready" if reasons else "ready", "reasons": reasons}
        return JSONResponse(body, status_code=503 if reasons else 200,
                            headers={"Retry-After": "2"} if reasons else None)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if auth.required():
            require_admin(principal(request))
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        who = principal(request)
        return {"object": "list", "data": [m for m in model_list(gw) if who.allows(m["id"])]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> dict:
        who = principal(request)
        found = who.allows(model_id) and next((m for m in model_list(gw) if m["id"] == model_id), None)
        if not found:
            raise ModelNotFound(f"the model {model_id!r} does not exist: GET /v1/models lists the models "
                                "this key may use", param="model")
        return found

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Response:
        # served by the ASGI fast path (service/http/fastpath.py); this route describes it in the OpenAPI
        # schema, and serves it when the app is built with fast_path=False
        return await handler(req, request.headers, principal(request))


def check_store_durable(store, settings: Settings) -> None:
    """The registry and API keys need a Redis that keeps them on disk (see docs/configuration.md)."""
    r = getattr(store, "r", None)
    if settings.redis_url and r is not None:
        kind = require_persistence(r, store.describe(), settings.allow_volatile_redis)
        if kind is None:
            log.warning("the registry's Redis keeps nothing on disk: a restart loses every expert and key "
                        "(allowed by CONCLAVE_ALLOW_VOLATILE_REDIS)")
        elif kind == "rdb":
            log.warning("the registry's Redis keeps only RDB snapshots: changes since the last one are lost in "
                        "a crash; enable AOF (appendonly yes)")


def model_list(gw: Gateway) -> list[dict]:
    """The virtual models, then the registered experts, as OpenAI model objects."""
    now = int(time.time())
    data = [{"id": name, "object": "model", "created": now, "owned_by": "conclave", "description": text}
            for name, text in VIRTUAL_MODELS.items()]
    data += [{"id": e.name, "object": "model", "created": now, "owned_by": "conclave",
              "backend": e.backend, "prompt_style": e.prompt_style, "skills": list(e.skills)}
             for e in gw.store.list()]
    return data


async def not_ready(gw: Gateway) -> list[str]:
    """Why this gateway should get no traffic now: draining, router not loaded, store or Redis away."""
    reasons = []
    if gw.draining:
        reasons.append("draining: the gateway is shutting down")
    try:                        # loads it on first use (a router trained since the start becomes the default)
        await asyncio.to_thread(gw.routers.get)
    except ConclaveError as exc:
        reasons.append(f"router {gw.routers.default_name()!r} is not loaded: {exc.message}")
    try:
        await asyncio.wait_for(asyncio.to_thread(gw.store.list), READY_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason names it
        reasons.append(f"the registry store does not answer ({type(exc).__name__})")
    if gw.settings.redis_url and not await _redis_answers(gw.settings.redis_url):
        reasons.append("Redis does not answer")
    return reasons


async def _redis_answers(url: str) -> bool:
    import redis.asyncio as aredis

    r = aredis.Redis.from_url(url, socket_timeout=READY_TIMEOUT_S, socket_connect_timeout=READY_TIMEOUT_S)
    try:
        return bool(await r.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        await r.aclose()


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (used by ``conclave serve``)."""
    return create_app(load_settings())


def create_shared_app_from_env() -> FastAPI:
    """Factory of each process of ``conclave serve --workers N`` (N > 1)."""
    return create_app(load_settings(), shared=True)
