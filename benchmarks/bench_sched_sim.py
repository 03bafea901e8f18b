"""Simulated expert-batched scheduling at scale (a benchmark script, not a test).

    python -m benchmarks.bench_sched_sim [--profile h100-8b|vllm-reload|vllm-sleep] [--requests 1000]
        [--experts 16] [--max-batch 32] [--max-wait 120] [--utilisation 0.3,0.6,0.9] [--seed 0]

Drives the scheduler's own policy objects (BatchPolicy, FcfsPolicy) through a discrete-event
simulator with a parametrised cost model (defaults: RUNTIME.md's H100 figures), on an offline
workload (all requests at t=0) and on Poisson arrivals at several utilisations
(rate = utilisation * workers / gen_s), with 1 and 4 one-model workers.  Prints, per row:
loads, makespan and its ratio to the lower bound (generation + one cold load per distinct expert),
p50/p99 latency, the most loads of one expert within one max_wait window, and "split" loads
(an expert reloaded after being unloaded with requests still queued).
"""

from __future__ import annotations

import argparse

from service.scheduler.policy import BatchPolicy, FcfsPolicy

from .sched_sim import PROFILES, lower_bound, offline_grouped, simulate, workload

HEADER = (f"{'workload':<16}{'W':>2} {'policy':<21}{'loads':>6}{'makespan s':>12}{'/LB':>7}"
          f"{'p50 s':>9}{'p99 s':>9}{'bound s':>9}{'max/win':>8}{'split':>6}")


def row(name, workers, res, lb, bound, window) -> str:
    return (f"{name:<16}{workers:>2} {res.policy:<21}{res.loads:>6}{res.makespan:>12.0f}{res.makespan / lb:>7.3f}"
            f"{res.p(50):>9.1f}{res.p(99):>9.1f}{bound:>9.1f}{res.max_loads_per_window(window):>8}{res.split_loads:>6}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="h100-8b", choices=sorted(PROFILES))
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait", type=float, default=120.0)
    ap.add_argument("--utilisation", default="0.3,0.6,0.9")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cost = PROFILES[a.profile]
    service = cost.cold_s + cost.unload_s + a.max_batch * cost.gen_s   # one batch, with a cold switch
    print(f"cost model {cost}; max_batch {a.max_batch}, max_wait {a.max_wait:g} s; "
          f"service time (cold switch + full batch) {service:.1f} s; bound = max_wait + service time")
    print(HEADER)
    for workers in (1, 4):
        loads = [("offline", None)] + [(f"poisson u={u}", float(u) * workers / cost.gen_s)
                                       for u in a.utilisation.split(",")]
        for name, rate in loads:
            arrivals = workload(a.requests, a.experts, rate, seed=a.seed)
            lb = max(lower_bound(arrivals, cost, workers), arrivals[-1][0] + cost.gen_s)
            runs = [simulate(BatchPolicy(a.max_batch, a.max_wait), arrivals, cost, workers, "scheduler"),
                    simulate(FcfsPolicy(1, a.max_wait), arrivals, cost, workers, "fcfs")]
            if rate is None:
                runs.append(offline_grouped(arrivals, cost, workers))
            for res in runs:
                print(row(name, workers, res, lb, a.max_wait + service, a.max_wait))
            if rate is not None:    # visiting every expert once per max_wait must fit in the capacity
                need = float(name.split("=")[1]) + a.experts * cost.warm_s / (a.max_wait * workers)
                print(f"{'':<19}(utilisation + one warm load per expert per max_wait = {need:.2f}: "
                      f"the p99 bound is {'feasible' if need < 1 else 'infeasible'})")
        print()


if __name__ == "__main__":
    main()
