"""Real expert-batched scheduling on llama.cpp (a benchmark script, not a test).

    python -m benchmarks.perf.bench_sched_real [--requests 60] [--max-tokens 8] [--gap 0] [--threads 1] [--seed 0] [--rounds 2]

One llama.cpp worker holding one model at a time; six experts = the two bundled models plus
prompt variants of them (same weights, different system prompts: each a distinct expert and a
separate load).  The same requests, in the same random order, go through (1) the batching
scheduler (BatchPolicy), (2) first-come-first-served per-request switching (FcfsPolicy, the same
worker and scheduler code), (3) the offline grouped schedule (Symbolic-MoE).  Prints loads,
wall and CPU time, answered requests and time split, side by side (scheduler and FCFS
alternate for ``--rounds`` rounds, so a busy neighbour on the machine hits both).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from experts_registry.bundled import BUNDLED
from service.backends import GenParams, collect
from service.scheduler.local import LocalScheduler
from service.scheduler.offline import run_offline
from service.scheduler.policy import BatchPolicy, FcfsPolicy
from service.scheduler.stats import percentile
from service.workers.base import END, Job
from service.workers.llamacpp_worker import LlamaCppWorker

QUESTIONS = ["What is 2 + 2?", "Name a primary colour.", "What is the capital of France?",
             "Say hello.", "Name a planet.", "What do bees make?", "Name a fruit.", "What is ice?"]


def experts():
    smol, gemma = BUNDLED["smollm2"], BUNDLED["gemma-3-270m"]
    def variant(base, name, system):
        return base.__class__(**{**base.to_dict(), "name": name, "system_prompt": system})
    return [smol, gemma,
            variant(smol, "smol-terse", "Answer in as few words as possible."),
            variant(smol, "smol-teacher", "You are a patient teacher. Explain simply."),
            variant(smol, "smol-pirate", "Answer like a pirate."),
            variant(gemma, "gemma-trivia", "Question: What colour is the sky on a clear day?\nAnswer: Blue.")]


def requests(n: int, seed: int):
    rng, pool = random.Random(seed), experts()
    return [(rng.choice(pool), rng.choice(QUESTIONS)) for _ in range(n)]


async def online(policy, reqs, home, args) -> dict:
    sched = LocalScheduler([LlamaCppWorker(home, max_models=1, threads=args.threads)], policy,
                           queue_per_expert=10_000, queue_total=10_000)
    params = GenParams(max_tokens=args.max_tokens, temperature=0.0)

    async def one(expert, text, delay):
        await asyncio.sleep(delay)
        t0 = time.perf_counter()
        gen = await collect(sched.stream(expert, [{"role": "user", "content": text}], params))
        return time.perf_counter() - t0, gen

    t0, c0 = time.perf_counter(), time.process_time()
    done = await asyncio.gather(*[one(e, q, i * args.gap) for i, (e, q) in enumerate(reqs)],
                                return_exceptions=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await asyncio.to_thread(sched.close)
    ok = [d for d in done if not isinstance(d, BaseException) and d[1].usage.get("completion_tokens", 0) > 0]
    lat = [d[0] for d in ok]
    return {**sched.stats.snapshot(), "wall": wall, "cpu": cpu, "answered": len(ok), "p50": percentile(lat, 50),
            "p99": percentile(lat, 99)}


def offline(reqs, home, args) -> dict:
    worker = LlamaCppWorker(home, max_models=1, threads=args.threads)
    outs, pairs = [], []
    params = GenParams(max_tokens=args.max_tokens, temperature=0.0)
    for expert, text in reqs:
        out: list = []
        outs.append(out)
        pairs.append((expert, Job(expert.name, [{"role": "user", "content": text}], params, out.append)))
    t0, c0 = time.perf_counter(), time.process_time()
    stats = run_offline(worker, pairs, max_batch=64)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    answered = sum(1 for out in outs if out and out[-1] is END and len(out) > 1 and out[-2].usage)
    return {**stats, "wall": wall, "cpu": cpu, "answered": answered, "p50": float("nan"), "p99": float("nan")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--gap", type=float, default=0.0, help="seconds between arrivals (0: one burst)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2, help="alternating scheduler/fcfs runs")
    a = ap.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="conclave-bench-"))
    reqs = requests(a.requests, a.seed)
    print(f"{a.requests} requests over {len({e.name for e, _ in reqs})} experts, max_tokens {a.max_tokens}, "
          f"gap {a.gap:g} s, one llama.cpp worker with one model at a time, {a.threads} threads")
    rows = []
    for r in range(a.rounds):   # alternate, so a noisy neighbour on the machine hits both policies
        batch = BatchPolicy(a.max_batch, a.max_wait, reload_gap=a.max_wait)    # the gateway's default
        rows += [(f"scheduler #{r + 1}", asyncio.run(online(batch, reqs, home, a))),
                 (f"fcfs #{r + 1}", asyncio.run(online(FcfsPolicy(1, a.max_wait), reqs, home, a)))]
    rows.append(("offline-grouped", offline(reqs, home, a)))
    print(f"{'':<18}{'loads':>6}{'wall s':>9}{'cpu s':>8}{'answered':>10}{'load s':>8}{'gen s':>8}{'batch':>7}"
          f"{'p50 s':>8}{'p99 s':>8}")
    for name, r in rows:
        print(f"{name:<18}{r['loads']:>6}{r['wall']:>9.1f}{r['cpu']:>8.1f}{r['answered']:>7}/{a.requests:<3}"
              f"{r['load_seconds']:>7.1f}{r['generate_seconds']:>8.1f}{r['batch_size_mean']:>7.1f}"
              f"{r['p50']:>8.1f}{r['p99']:>8.1f}", flush=True)
    s = [r for n, r in rows if n.startswith("scheduler")]
    f = [r for n, r in rows if n.startswith("fcfs")]
    loads = sum(x["loads"] for x in f) / max(1, sum(x["loads"] for x in s))
    wall = sum(x["wall"] for x in f) / sum(x["wall"] for x in s)
    cpu = sum(x["cpu"] for x in f) / sum(x["cpu"] for x in s)
    print(f"fcfs / scheduler: loads {loads:.1f}x, wall time {wall:.2f}x, cpu time {cpu:.2f}x")


if __name__ == "__main__":
    main()
