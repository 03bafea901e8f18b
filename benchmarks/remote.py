"""``conclave bench run --url``: the same questions through a running gateway's HTTP API.

Each question is one ``POST /v1/chat/completions`` (an expert by name, or ``conclave-auto``
with ``conclave: {router, k, aggregator, return_candidates}``), a bounded number in flight;
the candidates come back in ``conclave.aggregation.candidates``.  Records are appended as
answers arrive, so Ctrl-C and resume work as in process.  The API key is sent, never printed.
"""

from __future__ import annotations

import asyncio
import time

from experts_registry.errors import AuthenticationError, ConfigError, InvalidRequest

from .datasets import Question, load_questions
from .generate import Interrupted, StopFlag
from .prompts import messages_for, score
from .runner import RunConfig, base_record, open_run_dir

RETRYABLE = (429, 503)


def request_body(cfg: RunConfig, q: Question) -> dict:
    body = {"model": "conclave-auto" if cfg.router else cfg.experts[0],
            "messages": messages_for(q, shots=cfg.shots, cot=cfg.cot),
            "max_tokens": cfg.max_tokens, "temperature": cfg.temperature}
    if cfg.router:
        body["conclave"] = {"router": cfg.router, "k": cfg.k, "aggregator": cfg.aggregator,
                            "return_candidates": True}
    return body


def record_from_response(cfg: RunConfig, q: Question, doc: dict, seconds: float) -> dict:
    info = doc.get("conclave") or {}
    text = doc["choices"][0]["message"]["content"] or ""
    agg = info.get("aggregation") or {}
    raw = agg.get("candidates") or [{"expert": info.get("expert"), "text": text, "error": None}]
    candidates = [{"expert": c["expert"], "answer": score(q, c.get("text") or "")[0], "text": c.get("text") or "",
                   "tokens": None, "latency_s": None, "error": c.get("error")} for c in raw]
    detail = {k: v for k, v in agg.items() if k != "candidates"}
    calls = len(candidates) + (1 if agg.get("aggregated_by") else 0)
    routing = info.get("route") or {"router": None, "k": 1, "experts": [info.get("expert")], "reason": "asked by name"}
    return {**base_record(q, text), "experts": [c["expert"] for c in candidates], "candidates": candidates,
            "error": None, "tokens": (doc.get("usage") or {}).get("total_tokens"), "calls": calls,
            "latency_s": round(seconds, 4), "routing": routing, "aggregator": cfg.aggregator,
            "aggregation": detail}


def failed_record(cfg: RunConfig, q: Question, message: str, seconds: float) -> dict:
    """The gateway answered 502/504: every expert failed; the question counts as wrong."""
    return {**base_record(q, ""), "experts": [], "candidates": [], "error": message, "tokens": 0, "calls": 0,
            "latency_s": round(seconds, 4), "routing": {"router": cfg.router, "reason": "request failed"},
            "aggregator": cfg.aggregator, "aggregation": {}}


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


async def ask(client, cfg: RunConfig, q: Question, tries: int = 5) -> dict:
    """One question; raises the error tree for the caller's mistakes (bad key, unknown model, ...)."""
    import httpx

    t0 = time.perf_counter()
    for attempt in range(tries):
        try:
            resp = await client.post("/v1/chat/completions", json=request_body(cfg, q))
        except httpx.TransportError as exc:
            raise ConfigError(f"no gateway answers at {client.base_url} ({type(exc).__name__}): start one with "
                              "'conclave serve' or fix --url") from None
        if resp.status_code in RETRYABLE and attempt + 1 < tries:
            await asyncio.sleep(float(resp.headers.get("retry-after") or 1.0))
            continue
        break
    seconds = time.perf_counter() - t0
    if resp.status_code == 200:
        return record_from_response(cfg, q, resp.json(), seconds)
    message = _error_message(resp)
    if resp.status_code >= 500:
        return failed_record(cfg, q, message, seconds)
    if resp.status_code == 401:
        raise AuthenticationError(f"the gateway refused the key ({message}): pass --api-key or set CONCLAVE_API_KEY")
    raise InvalidRequest(f"the gateway refused the request ({resp.status_code}): {message}")


def _error_message(resp) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]


def run_http(cfg: RunConfig, out, url: str, api_key: str | None = None, concurrency: int = 4,
             progress=None) -> dict:
    """Answer the run folder's missing questions through the gateway at ``url``; return the summary."""
    rd = open_run_dir(out, cfg)
    questions = load_questions(cfg.dataset, cfg.subset, cfg.limit, cfg.seed)
    done = rd.done_ids()
    todo = [q for q in questions if q.id not in done]
    if progress is not None:
        progress.reset(total=len(todo))
    stop, t0 = StopFlag(), time.perf_counter()
    with stop.catching_sigint():
        try:
            asyncio.run(_ask_all(cfg, todo, rd, url, api_key, concurrency, progress, stop))
        except asyncio.CancelledError:
            pass
    if stop:
        raise Interrupted(len(rd.done_ids()), len(questions))
    return rd.write_summary({"config": cfg.to_dict(), "wall_seconds": round(time.perf_counter() - t0, 2)})


async def _ask_all(cfg, todo, rd, url, api_key, concurrency, progress, stop: StopFlag) -> None:
    import httpx

    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    stop.cancels.append(lambda: loop.call_soon_threadsafe(task.cancel))
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(client, q: Question) -> None:
        async with gate:
            rd.append(await ask(client, cfg, q))
            if progress is not None:
                progress.update(1)

    async with httpx.AsyncClient(base_url=_base(url), headers=headers, timeout=httpx.Timeout(600.0)) as client:
        await asyncio.gather(*(one(client, q) for q in todo))
