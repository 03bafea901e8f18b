"""Cluster scheduling with real processes: Redis, N `conclave worker --kind fake` subprocesses with
scripted load and generation times, today's shared stream vs expert affinity, side by side
(a benchmark script, not a test).

    python -m benchmarks.perf.bench_cluster [--workers 1,4] [--experts 8] [--rates 0,40] [--requests 400]
        [--load-s 0.5] [--gen-s 0.02] [--max-batch 16] [--max-wait 30] [--modes shared,affinity]
        [--zipf 0.8] [--seed 0] [--redis-url redis://127.0.0.1:6379/15] [--json FILE]

Rate 0 sends every request at once; any other rate is Poisson arrivals per second.  Each run gets
its own key prefix (deleted afterwards) and fresh workers (one model each).  Per row: loads (from
`conclave workers --json`, with the count of the workers' own log lines in brackets when they
differ), the loads lower bound (each expert once; for Poisson arrivals once per max_wait window it
has requests in), makespan, p50/p99 latency, answered (each exactly once), what one worker held
half-way through, and the cluster simulator's loads and makespan on the same arrivals
(``cluster_sim``, the same decision code).  The full matrix of issue 15:
``--workers 1,2,4 --experts 8,16 --rates 0,20,40``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from service.scheduler.stats import percentile

from .cluster_sim import loads_lower_bound, simulate_cluster
from .sched_sim import Cost, workload

ROOT = Path(__file__).resolve().parents[2]
HEADER = (f"{'mode':<9}{'W':>2}{'E':>4}{'arrivals':>10}{'loads':>7}{'LB':>4}{'/LB':>6}{'makespan':>10}"
          f"{'p50 s':>8}{'p99 s':>8}{'answered':>10}  {'sim loads':>9}{'sim mk':>8}  held half-way")


def _env(a, prefix: str, mode: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "CONCLAVE_REDIS_URL": a.redis_url,
            "CONCLAVE_REDIS_PREFIX": prefix, "CONCLAVE_SCHED_CLUSTER": mode,
            "CONCLAVE_SCHED_MAX_BATCH": str(a.max_batch), "CONCLAVE_SCHED_MAX_WAIT": str(a.max_wait),
            "CONCLAVE_MAX_LOADED_MODELS": "1", "CONCLAVE_FAKE_LOAD_S": str(a.load_s),
            "CONCLAVE_FAKE_GEN_S": str(a.gen_s), "CONCLAVE_HOME": str(Path(a.home) / prefix.strip(":"))}


def workers_json(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "service.cli", "workers", "--json"], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def run_one(a, mode: str, workers: int, experts: int, rate: float) -> dict:
    import redis

    from experts_registry.model import Expert
    from service.backends import GenParams, collect
    from service.scheduler.redis_queue import RedisFront

    prefix = f"bench-cluster-{uuid.uuid4().hex[:8]}:"
    env, logs = _env(a, prefix, mode), Path(a.home) / prefix.strip(":")
    logs.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--kind", "fake", "--name", f"w{i}",
                               "--reclaim-ms", "2000"], env=env, cwd=ROOT, stdout=open(logs / f"w{i}.log", "w"),
                              stderr=subprocess.STDOUT) for i in range(workers)]
    arrivals = workload(a.requests, experts, rate or None, a.zipf, a.seed)
    front = RedisFront(a.redis_url, prefix, queue_total=10 ** 6)
    snap: dict = {}
    try:
        deadline = time.monotonic() + 60
        while sum(w["alive"] for w in workers_json(env).get("workers", [])) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not register within 60 s")
            time.sleep(0.2)

        async def main():
            t0 = time.monotonic()

            async def one(i: int):
                at, name = arrivals[i]
                await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
                sent = time.monotonic()
                gen = await collect(front.stream(Expert(name=name, backend="llamacpp", model="fake:echo"),
                                                 [{"role": "user", "content": f"q{i}"}], GenParams(max_tokens=4)))
                return gen.text == f"{name}: q{i}", time.monotonic() - sent, time.monotonic() - t0

            return await asyncio.gather(*[one(i) for i in range(len(arrivals))])

        half = threading.Timer(max(2.0, arrivals[-1][0] / 2), lambda: snap.update(workers_json(env)))
        half.start()
        results = asyncio.run(main())
        half.join()
        time.sleep(1.5)   # one heartbeat publishes the final stats
        report = workers_json(env)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        r = redis.Redis.from_url(a.redis_url)
        done = len(list(r.scan_iter(prefix + "sched:done:*")))
        for key in r.scan_iter(prefix + "*"):
            r.delete(key)
    logged = sum(f.read_text().count("fake worker") for f in logs.glob("w*.log"))
    lat = [x[1] for x in results]
    online = bool(rate)
    lb = loads_lower_bound(arrivals, a.max_wait, online)
    cost = Cost("fake", warm_s=a.load_s, cold_s=a.load_s, unload_s=0.0, gen_s=a.gen_s)
    sim = simulate_cluster(mode, arrivals, cost, workers, a.max_batch, a.max_wait, label=mode)
    held = {w["name"]: w["holds"] for w in snap.get("workers", [])}
    return {"mode": mode, "workers": workers, "experts": experts, "rate": rate, "requests": len(arrivals),
            "loads": report.get("loads_total"), "loads_logged": logged, "lower_bound": lb,
            "makespan_s": max(x[2] for x in results), "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99),
            "answered": sum(x[0] for x in results), "done_marks": done, "held_half_way": held,
            "sim_loads": sim.loads, "sim_makespan_s": sim.makespan, "sim_p99_s": sim.p(99),
            "workers_report": report}


def row(x: dict) -> str:
    arr = "burst" if not x["rate"] else f"{x['rate']:g}/s"
    loads = f"{x['loads']}" + ("" if x["loads"] == x["loads_logged"] else f"({x['loads_logged']})")
    held = " ".join(f"{w}:{','.join(h) or '-'}" for w, h in sorted(x["held_half_way"].items()))
    return (f"{x['mode']:<9}{x['workers']:>2}{x['experts']:>4}{arr:>10}{loads:>7}{x['lower_bound']:>4}"
            f"{(x['loads'] or 0) / x['lower_bound']:>6.2f}{x['makespan_s']:>10.2f}{x['p50_s']:>8.2f}{x['p99_s']:>8.2f}"
            f"{str(x['answered']) + '/' + str(x['requests']):>10}  {x['sim_loads']:>9}{x['sim_makespan_s']:>8.2f}  {held}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,4")
    ap.add_argument("--experts", default="8")
    ap.add_argument("--rates", default="0,40", help="0: all at once; else Poisson arrivals per second")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--load-s", type=float, default=0.5)
    ap.add_argument("--gen-s", type=float, default=0.02)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait", type=float, default=30.0)
    ap.add_argument("--modes", default="shared,affinity")
    ap.add_argument("--zipf", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--redis-url", default=os.environ.get("CONCLAVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
    ap.add_argument("--home", default="/tmp/conclave-bench-cluster")
    ap.add_argument("--json", dest="json_file", default=None, help="also write every row (with the workers' report)")
    a = ap.parse_args(argv)
    print(f"fake workers: load {a.load_s} s, generation {a.gen_s} s/request, one model each; max_batch "
          f"{a.max_batch}, max_wait {a.max_wait:g} s; {a.requests} requests, Zipf({a.zipf}); loads LB = one per "
          f"expert (burst) or per expert per {a.max_wait:g} s window with arrivals (Poisson)")
    print(HEADER)
    rows = []
    for experts in map(int, a.experts.split(",")):
        for rate in map(float, a.rates.split(",")):
            for workers in map(int, a.workers.split(",")):
                for mode in a.modes.split(","):
                    x = run_one(a, mode, workers, experts, rate)
                    rows.append(x)
                    print(row(x), flush=True)
    if a.json_file:
        Path(a.json_file).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
