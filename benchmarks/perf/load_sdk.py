"""What the client library on the path to an expert costs per call, in-process, at concurrency 1:

    python -m benchmarks.perf.load_sdk --api-base http://127.0.0.1:9100/v1 --n 300

Calls the same upstream sequentially with a bare aiohttp POST (the floor), Conclave's lean client
(``OpenAIBackend``) and ``litellm.acompletion``, each streamed and not, and prints one JSON object:
per path the wall-time p50/p99 per call and the CPU milliseconds per call (this process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from .load_gen import percentile, self_cpu

MESSAGES = [{"role": "user", "content": "Say hello."}]


async def _timed(call, n: int) -> dict:
    for _ in range(max(5, n // 10)):  # warm-up: connections, imports, caches
        await call()
    walls, c0 = [], self_cpu()
    for _ in range(n):
        t = time.perf_counter()
        await call()
        walls.append(time.perf_counter() - t)
    cpu = self_cpu() - c0
    return {"p50_ms": round(percentile(walls, 50) * 1000, 3), "p99_ms": round(percentile(walls, 99) * 1000, 3),
            "cpu_ms_per_call": round(cpu / n * 1000, 3)}


async def measure(api_base: str, n: int, with_litellm: bool = True) -> dict:
    from experts_registry.model import Expert
    from service.backends.openai_backend import OpenAIBackend, build_request
    from service.core.backend import GenParams, collect

    from .load_gen import session

    expert = Expert(name="load", backend="litellm", model="openai/load", api_base=api_base)
    lean = OpenAIBackend(30.0)
    out = {}
    async with session() as http:
        for stream in (False, True):
            params = GenParams(max_tokens=16, stream=stream)
            url, body = build_request(expert, MESSAGES, params)
            data = json.dumps(body).encode()

            async def bare():
                async with http.post(url, data=data, headers={"content-type": "application/json"}) as r:
                    await r.read()

            async def lean_call():
                await collect(lean.stream(expert, MESSAGES, params))

            suffix = "stream" if stream else "whole"
            out[f"aiohttp-bare-{suffix}"] = await _timed(bare, n)
            out[f"lean-client-{suffix}"] = await _timed(lean_call, n)
            if with_litellm:
                out[f"litellm-sdk-{suffix}"] = await _timed(_litellm_call(api_base, stream), n)
    await lean.close()
    return out


def _litellm_call(api_base: str, stream: bool):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True

    async def call():
        response = await litellm.acompletion(model="openai/load", api_base=api_base, api_key="none",
                                             messages=MESSAGES, max_tokens=16, stream=stream,
                                             num_retries=0, max_retries=0, timeout=30)
        if stream:
            async for _ in response:
                pass
    return call


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api-base", required=True)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--no-litellm", action="store_true")
    args = ap.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.api_base, args.n, not args.no_litellm))))


if __name__ == "__main__":
    main()
