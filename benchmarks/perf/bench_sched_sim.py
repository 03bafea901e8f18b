"""Simulated expert-batched scheduling at scale (a benchmark script, not a test).

    python -m benchmarks.perf.bench_sched_sim [--profile h100-8b|vllm-reload|vllm-sleep|vllm-tiers|vllm-restart] [--requests 1000]
        [--experts 16] [--max-batch 32] [--max-wait 120] [--utilisation 0.3,0.6,0.9] [--seed 0]
    python -m benchmarks.perf.bench_sched_sim --tiers [--max-wait 600]   # loads and makespan per tier profile

Drives the scheduler's own policy objects (BatchPolicy, FcfsPolicy) through a discrete-event
simulator with a parametrised cost model (defaults: RUNTIME.md's H100 figures), on an offline
workload (all requests at t=0) and on Poisson arrivals at several utilisations
(rate = utilisation * workers / gen_s), with 1 and 4 one-model workers.  Prints, per row:
loads, makespan and its ratio to the lower bound (generation + one cold load per distinct expert),
p50/p99 latency, the most loads of one expert within one max_wait window ("batch window"), "split"
loads (an expert reloaded after being unloaded with requests still queued) and requests refused at
admission (429 with Retry-After).  Policies: "scheduler" is the gateway's default (reload gap =
max_wait: an expert is loaded at most once per batch window), "no-reload-gap" the same without the
gap (lower latency at light load, more loads), "admission=bound" the default plus refusing requests
the queue would keep past the wait bound (CONCLAVE_SCHED_ADMISSION=bound), "fcfs" the baseline.
The "scheduler" rows drive one global policy for all workers (an oracle no cluster runs); "cluster
shared" and "cluster affinity" simulate the protocol `conclave worker` runs (``cluster_sim``: each
worker its own decision code with what it can read in Redis; CONCLAVE_SCHED_CLUSTER=shared|affinity).
"""

from __future__ import annotations

import argparse

from service.scheduler.policy import BatchPolicy, FcfsPolicy

from .cluster_sim import simulate_cluster
from .sched_sim import PROFILES, lower_bound, offline_grouped, simulate, workload

HEADER = (f"{'workload':<16}{'W':>2} {'policy':<21}{'loads':>6}{'makespan s':>12}{'/LB':>7}"
          f"{'p50 s':>9}{'p99 s':>9}{'bound s':>9}{'max/win':>8}{'split':>6}{'refused':>8}")


def row(name, workers, res, lb, bound, window) -> str:
    return (f"{name:<16}{workers:>2} {res.policy:<21}{res.loads:>6}{res.makespan:>12.0f}{res.makespan / lb:>7.3f}"
            f"{res.p(50):>9.1f}{res.p(99):>9.1f}{bound:>9.1f}{res.max_loads_per_window(window):>8}"
            f"{res.split_loads:>6}{res.rejected:>8}")


def runs_for(arrivals, cost, workers: int, max_batch: int, max_wait: float, online: bool) -> list:
    def batch(gap: float) -> BatchPolicy:
        return BatchPolicy(max_batch, max_wait, gap)

    runs = [simulate(batch(max_wait), arrivals, cost, workers, "scheduler")]
    if online:
        runs += [simulate(batch(0.0), arrivals, cost, workers, "no-reload-gap"),
                 simulate(batch(max_wait), arrivals, cost, workers, "admission=bound", admission=True)]
    runs += [simulate_cluster("shared", arrivals, cost, workers, max_batch, max_wait, label="cluster shared"),
             simulate_cluster("affinity", arrivals, cost, workers, max_batch, max_wait, label="cluster affinity")]
    runs.append(simulate(FcfsPolicy(1, max_wait), arrivals, cost, workers, "fcfs"))
    if not online:
        runs.append(offline_grouped(arrivals, cost, workers))
    return runs


TIER_PROFILES = ("vllm-restart", "vllm-tiers", "vllm-reload", "vllm-sleep")


def tier_table(requests: int, experts: int, max_batch: int, max_wait: float, seed: int) -> list[str]:
    """Loads (by the tier they came from) and makespan per vLLM profile: the scheduler and cluster
    affinity, 1 and 4 workers, Poisson arrivals at utilisation 0.6."""
    out = [f"{'profile':<12}{'W':>2} {'policy':<18}{'loads':>6}  {'from tier':<44}{'makespan s':>11}{'p99 s':>9}"]
    for name in TIER_PROFILES:
        cost = PROFILES[name]
        for workers in (1, 4):
            arrivals = workload(requests, experts, 0.6 * workers / cost.gen_s, seed=seed)
            for res in (simulate(BatchPolicy(max_batch, max_wait, max_wait), arrivals, cost, workers, "scheduler"),
                        simulate_cluster("affinity", arrivals, cost, workers, max_batch, max_wait,
                                         label="cluster affinity")):
                tiers = " ".join(f"{t}:{n}" for t, n in sorted(res.tier_loads.items()))
                out.append(f"{name:<12}{workers:>2} {res.policy:<18}{res.loads:>6}  {tiers:<44}"
                           f"{res.makespan:>11.0f}{res.p(99):>9.1f}")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="h100-8b", choices=sorted(PROFILES))
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait", type=float, default=120.0)
    ap.add_argument("--utilisation", default="0.3,0.6,0.9")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiers", action="store_true", help="only the table of loads and makespan per vLLM tier profile")
    a = ap.parse_args(argv)
    if a.tiers:
        print("\n".join(tier_table(a.requests, a.experts, a.max_batch, a.max_wait, a.seed)))
        return
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
            for res in runs_for(arrivals, cost, workers, a.max_batch, a.max_wait, rate is not None):
                print(row(name, workers, res, lb, a.max_wait + service, a.max_wait))
            if rate is not None:    # visiting every expert once per max_wait must fit in the capacity
                need = float(name.split("=")[1]) + a.experts * cost.warm_s / (a.max_wait * workers)
                print(f"{'':<19}(utilisation + one warm load per expert per max_wait = {need:.2f}: "
                      f"the p99 bound is {'feasible' if need < 1 else 'infeasible'})")
        print()


if __name__ == "__main__":
    main()
