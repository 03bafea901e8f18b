"""What the gateway's own code costs per chat request, in-process: no network, no server, an
instant scripted expert. Side by side in one run:

- ``asgi-floor``: a raw ASGI app that answers a constant JSON body (what any ASGI app pays here);
- ``fast-path``: the app as served, POST /v1/chat/completions through ``service/http/fastpath.py``;
- ``fastapi-route``: the same app built with ``fast_path=False`` (the FastAPI route serves it);
- ``pipeline``: ``Gateway.complete`` alone (resolve, deadline, metrics, the expert's stream).

Each request goes through the whole ASGI stack the server calls (middleware, auth with an API key,
body limit, metrics). Run: ``.venv/bin/python -m benchmarks.perf.bench_hotpath [--requests 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time

API_KEY = "sk-hotpath"
BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Say hi."}],
                   "max_tokens": 16}).encode()


def build(fast_path: bool):
    from experts_registry import open_store
    from experts_registry.model import Expert
    from service.backends import BackendPool
    from service.backends.fake import FakeBackend
    from service.core.config import load_settings
    from service.http.app import create_app
    from service.pipeline.gateway import Gateway

    settings = load_settings()
    store = open_store(settings.home)
    store.add(Expert(name="bench", backend="llamacpp", model="fake:say=hi"), replace=True)
    gateway = Gateway(settings, store, BackendPool(settings, {"llamacpp": FakeBackend}))
    return create_app(settings, gateway, fast_path=fast_path), gateway


def scope() -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
            "query_string": b"", "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                        (b"authorization", f"Bearer {API_KEY}".encode()),
                        (b"content-length", str(len(BODY)).encode())]}


async def one(app) -> int:
    sent = iter([{"type": "http.request", "body": BODY, "more_body": False}])
    status = [0]

    async def receive():
        return next(sent, {"type": "http.disconnect"})

    async def send(message):
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    await app(scope(), receive, send)
    return status[0]


async def floor_app(scope, receive, send):
    await receive()
    body = json.dumps({"id": "x", "choices": [{"message": {"role": "assistant", "content": "hi"}}]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def timed(call, n: int) -> float:
    for _ in range(min(500, n)):   # warm-up
        await call()
    t0 = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - t0) / n * 1e6


async def measure(n: int) -> dict:
    from service.core.protocol import ChatRequest

    fast, gateway = build(True)
    slow, _ = build(False)
    for app in (fast, slow):
        status = await one(app)
        if status != 200:
            raise SystemExit(f"the gateway answered {status}, not 200: the benchmark is misconfigured")
    req = ChatRequest.model_validate_json(BODY)
    out = {}
    for name, call in (("asgi-floor", lambda: one(floor_app)), ("fast-path", lambda: one(fast)),
                       ("fastapi-route", lambda: one(slow)), ("pipeline", lambda: gateway.complete(req))):
        out[name] = await timed(call, n)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000, help="requests per row")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as home:
        os.environ.update(CONCLAVE_HOME=home, CONCLAVE_API_KEYS=API_KEY)
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        us = runner(measure(args.requests))
    print(f"in-process cost per chat request ({args.requests} sequential requests per row, one core)")
    for name, v in us.items():
        print(f"  {name:<14} {v:8.1f} us")
    print(f"fastapi-route / fast-path: {us['fastapi-route'] / us['fast-path']:.2f}x; "
          f"fast-path above the pipeline: {us['fast-path'] - us['pipeline']:.1f} us")


if __name__ == "__main__":
    main()
