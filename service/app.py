"""The FastAPI application: OpenAI-compatible routes over :class:`~service.gateway.Gateway`."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from experts_registry import offer_bundled, open_store
from experts_registry.errors import ConclaveError, InvalidRequest

from .admin import admin_routes
from .auth import Authenticator, Principal, require_admin
from .backends import BackendPool
from .config import Settings, load_settings
from .errors import install_error_handlers
from .gateway import VIRTUAL_MODELS, Gateway
from .idempotency import ticket_for
from .middleware import AuthAndLimits
from .protocol import ChatRequest, chunk_body, completion_body, new_id
from .ratelimit import RateLimiter
from .shutdown import MARGIN_S, on_shutdown_signal

log = logging.getLogger("conclave.app")


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> FastAPI:
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

    app = FastAPI(title="Conclave", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible gateway composing whole expert LLMs.")
    app.state.gateway = gateway
    gateway.metrics.watch_schedulers(gateway.backends.stats)
    auth = Authenticator(settings, gateway.store)
    install_error_handlers(app, gateway.metrics)
    app.add_middleware(AuthAndLimits, settings=settings, metrics=gateway.metrics, auth=auth)
    _routes(app, gateway, auth, RateLimiter(settings.redis_url, settings.redis_prefix))
    app.include_router(admin_routes(gateway, settings))
    return app


def principal(request: Request) -> Principal:
    return request.scope["conclave.principal"]


def _routes(app: FastAPI, gw: Gateway, auth: Authenticator, limiter: RateLimiter) -> None:
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
        bad = req.forbidden_fields()
        if bad:
            raise InvalidRequest(f"field {bad[0]!r} is not accepted: the gateway decides where traffic goes",
                                 param=bad[0])
        who = principal(request)
        who.check_model(req.model)
        await limiter.admit(who)

        async def spend(usage: dict | None) -> None:
            await limiter.spend_tokens(who, (usage or {}).get("total_tokens", 0))

        ticket = ticket_for(request.headers, who.key_id, req)
        if req.stream:
            return await _stream(gw, req, who, spend, ticket)
        routed, gen = await gw.complete(req, allowed=who.models, ticket=ticket)
        await spend(gen.usage)
        body = completion_body(new_id(), routed.expert.name, gen.text, gen.finish_reason, gen.usage, routed.info())
        return JSONResponse(body, headers=_headers(routed))


async def _stream(gw: Gateway, req: ChatRequest, who: Principal, spend, ticket=None) -> Response:
    routed, chunks = await gw.open_stream(req, allowed=who.models, ticket=ticket)
    it = chunks.__aiter__()
    try:
        first = await it.__anext__()  # errors before the first token still get a proper status
    except StopAsyncIteration:
        first = None
    rid, model, info = new_id(), routed.expert.name, routed.info()

    async def events():
        usage, finish = None, "stop"
        yield _sse(chunk_body(rid, model, {"role": "assistant", "content": ""}, None, info))
        try:
            delta = first
            while delta is not None:
                if delta.text:
                    yield _sse(chunk_body(rid, model, {"content": delta.text}, None, {"expert": model}))
                usage, finish = delta.usage or usage, delta.finish_reason or finish
                delta = await anext(it, None)
        except ConclaveError as exc:
            yield _sse(exc.to_body())   # in-band error, and no [DONE]: never a silent truncation
            return
        except Exception:
            log.exception("stream from %s broke", model)
            yield _sse(ConclaveError("internal error while streaming").to_body())
            return
        finally:
            await it.aclose()   # the client left or the stream ended: stop the expert
            await spend(usage)
        yield _sse(chunk_body(rid, model, {}, finish, {"expert": model}))
        if req.include_usage() and usage:
            yield _sse({**chunk_body(rid, model, {}, None, {"expert": model}), "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=_headers(routed))


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _headers(routed) -> dict:
    headers = {"x-conclave-expert": routed.expert.name}
    if routed.decision is not None:
        headers["x-conclave-router"] = routed.decision.router
        headers["x-conclave-route"] = routed.decision.reason.encode("ascii", "replace").decode()[:500]
    if routed.aggregation is not None:
        headers["x-conclave-aggregator"] = routed.aggregation.aggregator
        headers["x-conclave-candidates"] = ",".join(c.expert for c in routed.aggregation.candidates)
    return headers


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (used by ``conclave serve``)."""
    return create_app(load_settings())
