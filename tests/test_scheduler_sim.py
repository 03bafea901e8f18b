"""The simulator drives the scheduler's own policy: checks of the schedule's shape, not of timing."""

from __future__ import annotations

from benchmarks.perf.sched_sim import PROFILES, lower_bound, offline_grouped, simulate, workload
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


BOUND = 120 + COST.cold_s + COST.unload_s + 32 * COST.gen_s


def test_reload_gap_loads_each_expert_at_most_once_per_batch_window_online():
    for workers, util in ((1, 0.3), (1, 0.6), (4, 0.3), (4, 0.6), (4, 0.9)):
        arrivals = workload(600, experts=16, rate=util * workers / COST.gen_s, seed=4)
        gap = simulate(BatchPolicy(32, 120, reload_gap=120), arrivals, COST, workers)
        eager = simulate(BatchPolicy(32, 120), arrivals, COST, workers)
        assert len(gap.latencies) == 600
        assert gap.max_loads_per_window(120) == 1, (workers, util)
        assert gap.loads < eager.loads
        assert gap.p(99) <= BOUND                 # holding a request never breaks the wait bound


def test_admission_keeps_p99_within_the_bound_past_capacity_and_refuses_the_rest():
    arrivals = workload(1000, experts=16, rate=0.45, seed=0)    # utilisation 0.9 on one worker: infeasible
    plain = simulate(BatchPolicy(32, 120, 120), arrivals, COST, 1)
    guarded = simulate(BatchPolicy(32, 120, 120), arrivals, COST, 1, admission=True)
    assert plain.p(99) > BOUND and plain.rejected == 0
    assert guarded.p(99) <= BOUND
    assert 0 < guarded.rejected < 300
    assert len(guarded.latencies) + guarded.rejected == 1000     # every request answered or refused


def test_admission_refuses_nothing_when_the_load_is_light():
    arrivals = workload(600, experts=16, rate=0.15, seed=5)
    assert simulate(BatchPolicy(32, 120, 120), arrivals, COST, 1, admission=True).rejected == 0


def test_sleep_tiers_wake_from_host_memory_and_beat_a_full_reload():
    from benchmarks.perf.cluster_sim import simulate_cluster

    arrivals = workload(300, experts=12, rate=0.3, seed=4)
    tiers, reload = PROFILES["vllm-tiers"], PROFILES["vllm-restart"]      # the same engines, no sleep mode
    res = simulate(BatchPolicy(32, 600, 600), arrivals, tiers, 1)
    assert len(res.latencies) == 300 and sum(res.tier_loads.values()) == res.loads
    assert res.tier_loads["disk"] == len({e for _, e in arrivals})          # each expert's first load is cold
    assert res.tier_loads.get("sleep1", 0) > 0 and res.tier_loads.get("sleep2", 0) > 0   # 4 slots for 12 experts
    assert res.makespan < simulate(BatchPolicy(32, 600, 600), arrivals, reload, 1).makespan
    aff = simulate_cluster("affinity", arrivals, tiers, 2, 32, 600)
    assert len(aff.latencies) == 300 and aff.tier_loads.get("sleep1", 0) + aff.tier_loads.get("sleep2", 0) > 0
