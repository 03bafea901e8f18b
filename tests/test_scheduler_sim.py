"""The simulator drives the scheduler's own policy: checks of the schedule's shape, not of timing."""

from __future__ import annotations

from benchmarks.sched_sim import PROFILES, lower_bound, offline_grouped, simulate, workload
from service.scheduler.policy import BatchPolicy, FcfsPolicy

COST = PROFILES["h100-8b"]


def test_offline_workload_loads_each_expert_once_and_nears_the_lower_bound():
    arrivals = workload(400, experts=16, rate=None, seed=1)
    for workers in (1, 4):
        lb = lower_bound(arrivals, COST, workers)
        res = simulate(BatchPolicy(32, 120), arrivals, COST, workers)
        assert res.loads == len({e for _, e in arrivals})
        assert res.makespan <= 1.1 * lb
        assert len(res.latencies) == 400
    fcfs = simulate(FcfsPolicy(1, 120), arrivals, COST, 1)
    assert fcfs.loads > 5 * 16


def test_online_p99_stays_within_the_wait_bound_plus_service_time_when_feasible():
    arrivals = workload(600, experts=16, rate=0.3, seed=2)        # utilisation 0.6 on one worker
    res = simulate(BatchPolicy(32, 120), arrivals, COST, 1)
    assert len(res.latencies) == 600
    assert res.p(99) <= 120 + COST.cold_s + COST.unload_s + 32 * COST.gen_s


def test_symbolic_moe_grouping_loads_once_per_expert():
    arrivals = workload(200, experts=8, rate=None, seed=3)
    res = offline_grouped(arrivals, COST, 2)
    assert res.loads == 8 and res.max_loads_per_window(1e9) == 1
