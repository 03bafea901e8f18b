"""The operator dashboard at ``/ui``: overview, experts, routing and workers, served by the gateway itself.

The pages are static files shipped in the package (``ui_static/``: HTML, CSS and plain JavaScript, no
build step, nothing fetched from elsewhere: the Content-Security-Policy allows only this origin); they
read the JSON routes under ``/ui/api/``. Access: like ``/metrics``, open while the gateway has no keys,
an admin key once it has any (a user key gets 403, no key 401). Browsers cannot send a bearer token
when they open a page, so under ``/ui`` the key may also come as HTTP Basic credentials (any user
name, the key as password): the 401 asks the browser for them. Everything is read-only except the
playground (``/ui/api/route``, ``/ui/api/chat``) and the ping button, which are POSTs that must carry
``X-Conclave-UI: 1``: another site's page cannot add that header (no CORS here), so it cannot make an
operator's browser spend tokens.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from contextlib import asynccontextmanager, suppress
from importlib import resources
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from experts_registry.errors import AuthenticationError, InvalidRequest
from router import ROUTERS

from ..core.config import VIRTUAL_AUTO, VIRTUAL_MOE, Settings
from ..core.metric_windows import History, figures, series, snapshot
from ..core.protocol import ChatRequest
from ..pipeline.decisions import describe
from ..pipeline.gateway import Gateway
from .auth import Authenticator, require_admin
from .chat import ChatHandler
from .ui_views import WorkerHistory, experts_view, ping, workers_view

log = logging.getLogger("conclave.ui")
PREFIX = "/ui"
PAGES = ("experts", "routing", "workers")      # and the overview at /ui itself
REALM = b'Basic realm="Conclave dashboard: the admin key as password", charset="UTF-8"'
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
SAMPLE_EVERY_S, WORKERS_EVERY_S = 5.0, 10.0


def is_ui(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def browser_authorization(header: str | None) -> str | None:
    """``Basic base64(name:key)`` (what a browser sends after the 401's prompt) as ``Bearer key``."""
    if not header or not header[:6].lower() == "basic ":
        return header
    try:
        _, _, key = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed Basic credentials: give the admin key as the password") from None
    return f"Bearer {key}" if key else None


def static_file(name: str) -> tuple[bytes, str] | None:
    """A file of ``ui_static/`` (no sub-folders, known types only), read when asked for."""
    suffix = name[name.rfind("."):] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in TYPES:
        return None
    path = resources.files("service.http").joinpath("ui_static", name)
    return (path.read_bytes(), TYPES[suffix]) if path.is_file() else None


class RouteAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=20_000)
    router: str | None = Field(default=None, max_length=64)
    k: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] = 1


class UiState:
    """The dashboard's memory: metric snapshots and the cluster's history, filled by a sampler task."""

    def __init__(self, gw: Gateway, settings: Settings):
        self.gw, self.settings = gw, settings
        self.started = time.time()
        self.history = History(size=int(3600 / SAMPLE_EVERY_S) + 1, every=SAMPLE_EVERY_S)
        self.history.add(self.started, snapshot(gw.metrics))
        self.workers = WorkerHistory()
        self._report = None

    def report(self) -> dict:
        """The cluster's placement report ({} without the Redis queue, or when Redis does not answer)."""
        if self.settings.sched_queue != "redis":
            return {}
        if self._report is None:
            from ..scheduler.placement import report_source

            self._report = report_source(self.settings.redis_url, self.settings.redis_prefix)
        return self._report()

    async def run(self) -> None:
        """Every few seconds: a metrics snapshot; with the Redis queue, the cluster's loads and queues."""
        last_workers = 0.0
        while True:
            try:
                now = time.time()
                self.history.add(now, snapshot(self.gw.metrics))
                if self.settings.sched_queue == "redis" and now - last_workers >= WORKERS_EVERY_S:
                    last_workers = now
                    self.workers.add(now, await asyncio.to_thread(self.report))
            except Exception:  # noqa: BLE001 - the dashboard's sampler never takes the gateway down
                log.exception("dashboard sampler failed")
            await asyncio.sleep(SAMPLE_EVERY_S)


def install_ui(app: FastAPI, gw: Gateway, settings: Settings, auth: Authenticator, handler: ChatHandler) -> None:
    """Mount ``/ui`` and run its sampler for the app's lifetime."""
    state = UiState(gw, settings)
    app.include_router(ui_routes(state, auth, handler))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with inner(a) as value:
            task = asyncio.create_task(state.run())
            try:
                yield value
            finally:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
    app.router.lifespan_context = lifespan


def ui_routes(state: UiState, auth: Authenticator, handler: ChatHandler) -> APIRouter:
    api = APIRouter(prefix=PREFIX, include_in_schema=False)

    def guard(request: Request, action: bool = False) -> None:
        if auth.required():
            require_admin(request.scope["conclave.principal"])
        if action and request.headers.get("x-conclave-ui") != "1":
            raise InvalidRequest("dashboard actions need the header 'X-Conclave-UI: 1' (the dashboard's pages "
                                 "send it; other sites' pages cannot)", param="X-Conclave-UI")

    _pages(api, guard)
    _reads(api, state, guard)
    _actions(api, state.gw, guard, handler)
    return api


def _pages(api: APIRouter, guard) -> None:
    def page(request: Request) -> Response:
        guard(request)
        body, kind = static_file("index.html")
        return Response(body, media_type=kind, headers={"content-security-policy": CSP, "cache-control": "no-cache"})

    api.add_api_route("", page, methods=["GET"])
    for name in PAGES:
        api.add_api_route("/" + name, page, methods=["GET"])

    @api.get("/static/{name}")
    async def static(name: str, request: Request) -> Response:
        guard(request)
        found = static_file(name)
        if found is None:
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response(found[0], media_type=found[1], headers={"cache-control": "no-cache"})


def _reads(api: APIRouter, state: UiState, guard) -> None:
    gw = state.gw

    @api.get("/api/overview")
    async def overview(request: Request, window: int = Query(300, ge=10, le=3600)) -> dict:
        guard(request)
        now, snap = time.time(), snapshot(gw.metrics)
        state.history.add(now, snap)
        base_t, base = state.history.base(now, window) or (now, None)
        out = figures(snap, base, now - base_t)
        out["window_s"], out["uptime_s"] = window, round(now - state.started, 1)
        out["since_start"] = figures(snap, None, now - state.started)["requests"]
        out["series"] = series(state.history.items(), (now, snap), now - window)
        return out

    @api.get("/api/experts")
    async def experts(request: Request) -> list[dict]:
        guard(request)
        return await asyncio.to_thread(experts_view, gw)

    @api.get("/api/routers")
    async def routers(request: Request) -> dict:
        guard(request)
        return {"routers": sorted(ROUTERS), "default": gw.routers.default_name(),
                "show_prompts": gw.decisions.show_prompts, "decisions_kept": gw.decisions.size}

    @api.get("/api/decisions")
    async def decisions(request: Request, limit: int = Query(50, ge=1, le=10_000)) -> dict:
        guard(request)
        return {"show_prompts": gw.decisions.show_prompts, "kept": gw.decisions.size,
                "decisions": gw.decisions.recent(limit)}

    @api.get("/api/workers")
    async def workers(request: Request) -> dict:
        guard(request)
        rep = await asyncio.to_thread(state.report)
        if rep:
            state.workers.add(time.time(), rep)
        return workers_view(gw, rep, state.workers)


def _actions(api: APIRouter, gw: Gateway, guard, handler: ChatHandler) -> None:
    """The POSTs: ping an expert, preview a routing decision, the playground's chat."""

    @api.post("/api/experts/{name}/ping")
    async def ping_expert(name: str, request: Request) -> dict:
        guard(request, action=True)
        return await ping(gw, name)

    @api.post("/api/route")
    async def route(ask: RouteAsk, request: Request) -> dict:
        guard(request, action=True)
        k = ask.k
        req = ChatRequest(model=VIRTUAL_AUTO if k == 1 else VIRTUAL_MOE,
                          messages=[{"role": "user", "content": ask.prompt}], conclave={"router": ask.router, "k": k})
        routed = await gw.route(req, request.scope["conclave.principal"].models, record=False)
        return {"model": req.model, **describe(routed.decision)}

    @api.post("/api/chat")
    async def chat(req: ChatRequest, request: Request) -> Response:
        guard(request, action=True)
        return await handler(req, request.headers, request.scope["conclave.principal"])
