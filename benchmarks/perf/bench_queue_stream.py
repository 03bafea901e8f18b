"""Token streaming through the Redis queue against the in-process path, with a real llama.cpp expert
(a benchmark script, not a test).

    python -m benchmarks.perf.bench_queue_stream [--expert smollm2] [--max-tokens 64] [--rounds 3]
        [--threads 2] [--redis-url redis://127.0.0.1:6379/15] [--json FILE]

Three paths answer the same prompt (temperature 0, ``max_tokens`` tokens), alternating, ``rounds``
times each after one warm-up: **queue, streamed** (a `conclave worker --kind llamacpp` process, the
gateway side ``RedisFront.stream`` with ``stream: true``), **queue, whole** (the same worker, ``stream:
false``: the answer waits for its end) and **local, streamed** (the gateway's in-process scheduler and
llama.cpp worker, no Redis).  Per path: time to the first content chunk, time to the whole answer, their
ratio (issue 16's acceptance: the first chunk before half of the whole answer's time), content chunks
and ms per token.  Then the publisher alone (``TokenPublisher``, real Redis, no model): deltas emitted a
token every 20 ms (a small CPU model) and every 2 ms (a GPU); its CPU per token, the time of one emit
on the generating thread, and the entries and pipelines it wrote, so the cost of publishing on a small
worker is a number, not a guess.  Medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to fly."}]
HEADER = f"{'path':<18}{'first s':>9}{'whole s':>9}{'first/whole':>13}{'chunks':>8}{'tokens':>8}{'ms/token':>10}"


async def timed(chunks) -> dict:
    """Time to the first content delta and to the end of a stream of Deltas; chunk and token counts."""
    t0, first, n, usage = time.perf_counter(), None, 0, {}
    async for d in chunks:
        if d.text:
            n += 1
            first = first if first is not None else time.perf_counter() - t0
        usage = d.usage or usage
    whole = time.perf_counter() - t0
    return {"first_s": first if first is not None else whole, "whole_s": whole, "chunks": n,
            "tokens": usage.get("completion_tokens", 0)}


def start_worker(a, prefix: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONCLAVE_REDIS_URL": a.redis_url, "CONCLAVE_REDIS_PREFIX": prefix,
           "CONCLAVE_LLAMA_THREADS": str(a.threads), "CONCLAVE_MAX_LOADED_MODELS": "1"}
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--kind", "llamacpp", "--name", "bench"],
                            env=env, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def local_scheduler(a):
    from service.core.config import load_settings
    from service.scheduler.local import LocalScheduler
    from service.workers.llamacpp_worker import LlamaCppWorker

    return LocalScheduler([LlamaCppWorker(load_settings().home, 1, threads=a.threads)])


async def measure_paths(a, prefix: str) -> dict[str, list[dict]]:
    from experts_registry.bundled import BUNDLED
    from service.core.backend import GenParams
    from service.scheduler.redis_queue import RedisFront

    expert, front, local = BUNDLED[a.expert], RedisFront(a.redis_url, prefix), local_scheduler(a)
    params = GenParams(max_tokens=a.max_tokens, temperature=0)
    paths = {"queue, streamed": lambda: front.stream(expert, PROMPT, params),
             "queue, whole": lambda: front.stream(expert, PROMPT, GenParams(max_tokens=a.max_tokens, temperature=0,
                                                                           stream=False)),
             "local, streamed": lambda: local.stream(expert, PROMPT, params)}
    runs: dict[str, list[dict]] = {name: [] for name in paths}
    try:
        for name, make in paths.items():   # warm-up: loads, first-call costs
            await asyncio.wait_for(timed(make()), 300)
        for _ in range(a.rounds):
            for name, make in paths.items():
                runs[name].append(await asyncio.wait_for(timed(make()), 300))
    finally:
        local.close()
    return runs


def publisher_cost(a, prefix: str, token_s: float, tokens: int) -> dict:
    """What publishing adds per token, with deltas emitted ``token_s`` apart: process CPU against the same
    loop without publishing, the time of one emit on the generating thread, entries and pipelines written."""
    import redis

    from service.core.backend import Delta, GenParams
    from service.scheduler.redis_queue import keys
    from service.scheduler.token_publish import TokenPublisher
    from service.workers.base import Job

    r, k = redis.Redis.from_url(a.redis_url), keys(prefix)
    pub = TokenPublisher(r, k, "bench")

    def paced(publish: bool) -> tuple[float, float, int]:
        cpu, emit_s, entries = time.process_time(), 0.0, 0
        for j in range(a.rounds):
            run = pub.open(f"cost-{token_s}-{publish}-{j}", stream=publish)
            run.job = Job("x", [], GenParams(), run.sink)
            for i in range(tokens):
                t = time.perf_counter()
                run.job.emit(Delta(f" tok{i}"))
                emit_s += time.perf_counter() - t
                time.sleep(token_s)
            pub.close(run)
            entries += r.xlen(k["tokens"] + run.job_id)
        return time.process_time() - cpu, emit_s, entries

    base_cpu, _, _ = paced(False)
    flushes = pub.flushes
    cpu, emit_s, entries = paced(True)
    n = a.rounds * tokens
    return {"token_ms": token_s * 1e3, "tokens": tokens, "cpu_us_per_token": max(0.0, cpu - base_cpu) / n * 1e6,
            "emit_us_per_token": emit_s / n * 1e6, "entries_per_answer": entries / a.rounds,
            "pipelines_per_answer": (pub.flushes - flushes) / a.rounds}


def summary(runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("first_s", "whole_s", "chunks", "tokens")}
    med["ratio"] = med["first_s"] / med["whole_s"] if med["whole_s"] else float("nan")
    med["ms_per_token"] = med["whole_s"] / med["tokens"] * 1e3 if med["tokens"] else float("nan")
    return med


def row(name: str, s: dict) -> str:
    return (f"{name:<18}{s['first_s']:>9.3f}{s['whole_s']:>9.3f}{s['ratio']:>13.2f}{s['chunks']:>8.0f}"
            f"{s['tokens']:>8.0f}{s['ms_per_token']:>10.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expert", default="smollm2")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--json", help="write every measurement here")
    a = ap.parse_args(argv)
    import redis

    prefix, log = f"bench-stream-{uuid.uuid4().hex[:8]}:", Path(f"/tmp/bench_queue_stream_{os.getpid()}.log")
    worker = start_worker(a, prefix, log)
    try:
        runs = asyncio.run(measure_paths(a, prefix))
        sums = {name: summary(rs) for name, rs in runs.items()}
        q, loc = sums["queue, streamed"], sums["local, streamed"]
        costs = [publisher_cost(a, prefix, pace / 1e3, int(q["tokens"]) or a.max_tokens) for pace in (20, 2)]
    finally:
        worker.terminate()
        worker.wait(30)
        r = redis.Redis.from_url(a.redis_url)
        for key in r.scan_iter(prefix + "*"):
            r.delete(key)
    print(f"{a.expert}, {a.max_tokens} tokens, temperature 0, {a.rounds} rounds (medians), {a.threads} threads, "
          f"{os.cpu_count()} CPUs")
    print(HEADER)
    for name, s in sums.items():
        print(row(name, s))
    print(f"queue streamed vs local: first chunk {q['first_s'] / loc['first_s']:.2f}x, whole answer "
          f"{q['whole_s'] / loc['whole_s']:.2f}x, {(q['whole_s'] - loc['whole_s']) / q['tokens'] * 1e3:+.2f} ms/token")
    ok = q["first_s"] < 0.5 * min(q["whole_s"], sums["queue, whole"]["whole_s"])
    print(f"first chunk at {q['ratio']:.0%} of the streamed answer's time, "
          f"{q['first_s'] / sums['queue, whole']['whole_s']:.0%} of the whole (unstreamed) answer's: "
          f"{'meets' if ok else 'MISSES'} issue 16's acceptance (under 50%)")
    for c in costs:
        print(f"publisher alone, a token every {c['token_ms']:g} ms: {c['cpu_us_per_token']:.0f} us CPU per token, "
              f"{c['emit_us_per_token']:.1f} us per emit on the generating thread, {c['entries_per_answer']:.0f} "
              f"entries and {c['pipelines_per_answer']:.0f} pipelines (with the cancel checks) per "
              f"{c['tokens']}-token answer")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs, "summary": sums, "publisher": costs},
                                           indent=2))


if __name__ == "__main__":
    main()
