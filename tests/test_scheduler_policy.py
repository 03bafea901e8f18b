"""The scheduling policy on hand-made queues and clocks (pure: no threads, no models)."""

from __future__ import annotations

import itertools

import pytest

from service.scheduler.policy import BatchPolicy, FcfsPolicy, Pending, group_by_expert

_ids = itertools.count(1)


def fill(policy, *arrivals):
    """arrivals: (expert, at) pairs -> the Pending items, added in order."""
    items = [Pending(next(_ids), e, at) for e, at in arrivals]
    for item in items:
        policy.add(item)
    return items


def drain(policy, loaded, now):
    """Run picks to exhaustion with a one-model worker; return the sequence of (expert, n, load)."""
    out = []
    while (pick := policy.next(loaded, now)) is not None:
        out.append((pick.expert, len(pick.items), pick.load))
        loaded = [pick.expert]
        policy.done(pick.expert)
    return out


def test_loaded_expert_is_served_first_even_when_another_has_more_work():
    p = BatchPolicy(max_batch=8, max_wait=100)
    fill(p, ("a", 0), ("b", 0), ("b", 0), ("b", 0))
    pick = p.next(["a"], now=1)
    assert (pick.expert, pick.load, pick.reason) == ("a", False, "loaded")


def test_switch_picks_the_expert_with_most_pending_work():
    p = BatchPolicy(max_batch=4, max_wait=100)
    fill(p, ("a", 0), ("b", 1), ("b", 1), ("b", 1), ("c", 1))
    pick = p.next([], now=2)
    assert (pick.expert, len(pick.items), pick.load, pick.reason) == ("b", 3, True, "score")


def test_switch_score_weighs_waiting_time_against_pending_work():
    p = BatchPolicy(max_batch=4, max_wait=10)
    fill(p, ("old", 0), ("busy", 9), ("busy", 9))
    # old: 1/4 + 9/10 = 1.15 ; busy: 2/4 + 0/10 = 0.5
    assert p.score("old", 9) > p.score("busy", 9)
    assert p.next(["other"], now=9).expert == "old"


def test_batches_are_capped_and_in_arrival_order():
    p = BatchPolicy(max_batch=3, max_wait=100)
    items = fill(p, *[("a", t) for t in range(7)])
    picks = [p.next(["a"], now=10) for _ in range(3)]
    assert [len(x.items) for x in picks] == [3, 3, 1]
    assert [i for x in picks for i in x.items] == items
    assert p.next(["a"], now=10) is None


def test_a_request_past_the_wait_bound_forces_its_expert_next():
    p = BatchPolicy(max_batch=2, max_wait=5)
    fill(p, ("cold", 0))
    fill(p, *[("hot", 4) for _ in range(10)])
    assert p.next(["hot"], now=4.9).expert == "hot"       # below the bound: stay on the loaded expert
    p.done("hot")
    pick = p.next(["hot"], now=5.0)                        # the cold request hits the bound, but a full
    assert (pick.expert, pick.reason) == ("hot", "full-batch")  # batch of the loaded expert goes first, once
    p.done("hot")
    pick = p.next(["hot"], now=6.0)
    assert (pick.expert, pick.load, pick.reason) == ("cold", True, "overdue")


def test_without_a_full_batch_waiting_the_overdue_request_goes_at_once():
    p = BatchPolicy(max_batch=4, max_wait=5)
    fill(p, ("cold", 0), ("hot", 4), ("hot", 4))
    pick = p.next(["hot"], now=5.0)
    assert (pick.expert, pick.reason) == ("cold", "overdue")


def test_no_starvation_under_a_continuous_stream_for_the_loaded_expert():
    p = BatchPolicy(max_batch=1, max_wait=3)
    (lonely,) = fill(p, ("b", 0))
    loaded, served_at = ["a"], None
    for now in range(20):             # one "a" arrives every second, each batch takes one second
        fill(p, ("a", now))
        pick = p.next(loaded, now)
        loaded = [pick.expert]
        p.done(pick.expert)
        if lonely in pick.items:
            served_at = now
            break
    assert served_at == 4             # overdue at 3, passed over once for a full batch of "a", then served


def test_overdue_ties_prefer_the_loaded_expert_so_an_offline_queue_does_not_thrash():
    p = BatchPolicy(max_batch=2, max_wait=1)
    fill(p, *[(e, 0) for e in "abcabcabc"])
    seq = drain(p, ["b"], now=50)     # everything is overdue and equally old
    assert [e for e, _, load in seq if load] == ["a", "c"]
    assert [e for e, _, _ in seq] == ["b", "b", "a", "a", "c", "c"]


def test_each_expert_is_loaded_once_when_all_work_is_queued():
    p = BatchPolicy(max_batch=4, max_wait=1000)
    fill(p, *[(e, 0) for e in "abcdabcdaabbccdd" * 3])
    seq = drain(p, [], now=1)
    loads = [e for e, _, load in seq if load]
    assert sorted(loads) == ["a", "b", "c", "d"]
    assert sum(n for _, n, _ in seq) == 48


def test_fcfs_switches_per_request_in_arrival_order():
    p = FcfsPolicy(max_batch=8, max_wait=1000)
    fill(p, ("a", 0), ("b", 1), ("a", 2), ("b", 3))
    seq = drain(p, [], now=5)
    assert seq == [("a", 1, True), ("b", 1, True), ("a", 1, True), ("b", 1, True)]


def test_cancelled_request_leaves_its_queue():
    p = BatchPolicy(max_batch=8, max_wait=100)
    a1, a2 = fill(p, ("a", 0), ("a", 1))
    assert p.remove(a1) and not p.remove(a1)
    assert p.next([], now=2).items == (a2,)
    assert not p.remove(a2)           # already picked: the worker skips it through its cancel flag


def test_a_claimed_expert_is_not_loaded_by_a_second_worker():
    p = BatchPolicy(max_batch=1, max_wait=100)
    fill(p, ("a", 0), ("a", 0), ("b", 1))
    assert p.next([], now=2).expert == "a"             # worker 1 loads a
    assert p.next([], now=2).expert == "b"             # worker 2 does not load a second copy of a
    assert p.next(["a"], now=2).expert == "a"          # a worker that has a loaded may serve it
    p.done("a"); p.done("b"); p.done("a")
    assert not p.claims


def test_eviction_prefers_experts_without_pending_work():
    p = BatchPolicy()
    fill(p, ("a", 0), ("a", 0), ("c", 0))
    assert p.eviction_order(["a", "b", "c"]) == ["b", "c", "a"]


def test_offline_grouping_keeps_first_appearance_order():
    items = [Pending(i, e, 0) for i, e in enumerate("bab c a".replace(" ", ""))]
    groups = group_by_expert(items)
    assert [(e, [i.id for i in g]) for e, g in groups] == [("b", [0, 2]), ("a", [1, 4]), ("c", [3])]


def test_reload_gap_holds_a_recently_unloaded_expert_until_the_gap_has_passed():
    p = BatchPolicy(max_batch=4, max_wait=50, reload_gap=30)
    p.add(Pending(1, "a", 0.0))
    assert p.next([], 0.0).load                           # loads a at t=0
    p.done("a")
    p.add(Pending(2, "b", 1.0))
    assert p.next(["a"], 1.0).expert == "b"               # a is swapped out for b
    p.done("b")
    p.add(Pending(3, "a", 5.0))
    assert p.next(["b"], 5.0) is None                     # a was loaded 5 s ago: held
    assert p.wake_at(5.0) == 30.0
    pick = p.next(["b"], 30.0)
    assert pick.expert == "a" and pick.load


def test_reload_gap_never_holds_past_the_wait_bound():
    p = BatchPolicy(max_batch=4, max_wait=10, reload_gap=100)
    p.last_load["a"] = 0.0
    p.add(Pending(1, "a", 1.0))
    assert p.next([], 2.0) is None and p.wake_at(2.0) == 11.0
    assert p.next([], 11.0).reason == "overdue"


def test_admission_refuses_work_past_the_wait_bound_with_a_retry_delay():
    p = BatchPolicy(max_batch=8, max_wait=10)
    assert p.admit("a", 0.0, set(), None, None) is None           # no estimates yet: admit
    for i in range(3):
        p.add(Pending(i, "a", 0.0))
    assert p.admit("a", 0.0, {"a"}, 1.0, 5.0) is None             # 4 x 1 s of work, a loaded: 4 <= 0.8 x 10
    assert p.admit("b", 0.0, {"a"}, 1.0, 5.0) == pytest.approx(1.0)   # 4 s + a 5 s load of b = 9 s: 1 s over 8
    assert p.admit("b", 0.0, {"a"}, 1.0, 5.0, workers=2) is None   # the same work over two workers
