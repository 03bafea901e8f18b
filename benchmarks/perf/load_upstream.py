"""A fixed-latency OpenAI-compatible upstream for the load benchmark (aiohttp, its own process):

    python -m benchmarks.perf.load_upstream --port 9100 --latency-ms 20
    python -m benchmarks.perf.load_upstream --port 9101 --proxy-to http://127.0.0.1:9100/v1

Every chat or text completion is answered after exactly ``--latency-ms`` (non-streaming: one JSON
body; streaming: ``--chunks`` SSE chunks spread over the latency, a usage chunk, ``[DONE]``). The
answer never depends on the request beyond ``stream``, so its own cost stays small and constant.
With ``--proxy-to`` it is instead the floor a gateway is compared with: a bare aiohttp reverse
proxy that passes each body to that upstream and its answer back (no auth, no parsing).
"""

from __future__ import annotations

import argparse
import asyncio
import json

ANSWER = "upstream ok"
USAGE = {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    body = {"id": "chatcmpl-load", "object": "chat.completion.chunk", "created": 0, "model": "load",
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def make_app(latency: float, chunks: int = 4):
    from aiohttp import web

    whole = json.dumps({"id": "chatcmpl-load", "object": "chat.completion", "created": 0, "model": "load",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                     "finish_reason": "stop"}], "usage": USAGE}).encode()
    words = ANSWER.split(" ")
    pieces = [_chunk({"role": "assistant", "content": ""})]
    pieces += [_chunk({"content": words[i % len(words)] if i == 0 else " " + words[i % len(words)]})
               for i in range(max(1, chunks))]
    tail = _chunk({}, "stop") + _chunk({}, usage=USAGE) + b"data: [DONE]\n\n"

    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body.replace(b" ", b""):
            await asyncio.sleep(latency)
            return web.Response(body=whole, content_type="application/json")
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await asyncio.sleep(latency / len(pieces))
            await resp.write(piece)
        await resp.write(tail)
        await resp.write_eof()
        return resp

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "load", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_post("/v1/completions", complete)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", models)
    return app


def make_proxy(upstream: str):
    import aiohttp
    from aiohttp import web

    async def forward(request: web.Request) -> web.Response:
        async with request.app["http"].post(upstream + request.path[len("/v1"):], data=await request.read(),
                                            headers={"content-type": "application/json"}) as r:
            return web.Response(body=await r.read(), status=r.status, content_type="application/json")

    async def session(app: web.Application):
        app["http"] = aiohttp.ClientSession()
        yield
        await app["http"].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/chat/completions", forward)
    app.router.add_get("/health", lambda _: web.Response(text="ok"))
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--chunks", type=int, default=4, help="content chunks of a streamed answer")
    ap.add_argument("--proxy-to", default=None, help="be a bare reverse proxy to this upstream's /v1 instead")
    args = ap.parse_args(argv)
    from aiohttp import web

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = make_proxy(args.proxy_to) if args.proxy_to else make_app(args.latency_ms / 1000, args.chunks)
    web.run_app(app, host="127.0.0.1", port=args.port,
                access_log=None, print=None, backlog=4096, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
