"""Skills router: profiles and the Symbolic-MoE recruiting formula, checked by hand."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from experts_registry.errors import ConfigError, InvalidRequest
from router import ROUTERS, RouteRequest
from router.encoder import HashingEncoder
from router.outcomes import Outcomes
from router.profiles import Profile, build_profile, label_skills, skill_name
from router.skills import SkillsRouter, global_competency, recruit_weights, sample_experts
from tests.router_fakes import candidates, two_topic_outcomes

# experts a, b, c over skills algebra, law; G = [2, 2, -2] -> shifted [5, 5, 1]
COUNTS = np.array([[3, -1], [1, 1], [-2, 0]])


def hand_profile() -> Profile:
    return Profile(("a", "b", "c"), ("algebra", "law"), COUNTS, None, None)


def test_skill_names_from_labels():
    assert skill_name("stemez-PhysicalChemistry") == "physical chemistry"
    assert skill_name("ori_mmlu-high_school_us_history") == "high school us history"
    assert label_skills({"category": "Law", "src": "ori_mmlu-professional_law"}) == ["law", "professional law"]
    assert label_skills({"category": "math", "src": "theoremQA-Math"}) == ["math"]


def test_profile_counts_plus_one_right_minus_one_wrong():
    # q0 (algebra): a right, b wrong; q1 (algebra, law): a wrong, b right; q2 (law): a no record, b right
    outcomes = Outcomes(("a", "b"), np.array([[1, 0], [0, 1], [np.nan, 1]]), ("x", "y", "z"))
    p = build_profile(outcomes, [["Algebra"], ["algebra", "law"], ["law"]])
    assert p.skills == ("algebra", "law")
    assert p.row("a") == {"law": -1}                           # zero counts are left out
    assert p.counts.tolist() == [[0, -1], [0, 2]]


def test_global_competency_shifts_negatives_and_uses_t_half():
    gamma = global_competency(COUNTS, 0.5)
    assert gamma == pytest.approx([25 / 51, 25 / 51, 1 / 51])
    # no negative totals: no shift; T = 1 is plain proportion
    assert global_competency(np.array([[1, 2], [1, 0]]), 1.0) == pytest.approx([0.75, 0.25])


def test_recruit_weights_local_times_global():
    local, gamma, w = recruit_weights(COUNTS, [0])             # skill algebra: S = [3, 1, -2]
    assert local.tolist() == [3, 1, -2]
    assert w == pytest.approx([3 * 25 / 51, 1 * 25 / 51, 0.0])  # S <= 0 gets no weight


def test_recruit_weights_shift_when_no_expert_is_suitable():
    counts = np.array([[-1, 2], [-3, 4], [-2, 0]])             # G = [1, 1, -2] -> [4, 4, 1]
    local, gamma, w = recruit_weights(counts, [0])             # S = [-1, -3, -2] -> [3, 1, 2]
    assert gamma == pytest.approx([16 / 33, 16 / 33, 1 / 33])
    assert w == pytest.approx([3 * 16 / 33, 1 * 16 / 33, 2 * 1 / 33])


def test_sampling_is_seeded_and_in_proportion():
    w = np.array([3.0, 1.0, 0.0])
    assert sample_experts(w, 2, seed=7) == sample_experts(w, 2, seed=7)
    firsts = Counter(sample_experts(w, 1, seed=s)[0] for s in range(4000))
    assert firsts[2] == 0                                      # zero weight: never drawn
    assert firsts[0] / 4000 == pytest.approx(0.75, abs=0.03)
    assert sorted(sample_experts(w, 3, seed=1)) == [0, 1, 2]   # the rest follow, by weight


def test_route_top_k_from_keywords_explains_itself():
    router = SkillsRouter(hand_profile(), sample=False)
    d = router.route(RouteRequest("solve x^2 = 4", metadata={"skills": ["algebra"]}),
                     candidates(("a", "b", "c")), k=2)
    assert d.experts == ["a", "b"]
    assert d.choices[0].score == pytest.approx(0.75)             # w normalised over experts
    assert d.choices[0].why["skills"] == {"algebra": 3}
    assert "algebra" in d.reason and "T=0.5" in d.reason


def test_route_sampled_is_reproducible_and_seed_dependent():
    router = SkillsRouter(hand_profile(), sample=True, seed=3)
    req = RouteRequest("q", metadata={"skills": ["algebra"]})
    picks = {tuple(router.route(RouteRequest("q", metadata={"skills": ["algebra"], "seed": s}),
                                candidates(("a", "b", "c")), k=1).experts) for s in range(50)}
    assert picks == {("a",), ("b",)}
    first = router.route(req, candidates(("a", "b", "c")), k=2).experts
    assert all(router.route(req, candidates(("a", "b", "c")), k=2).experts == first for _ in range(5))


def test_keywords_map_to_nearest_profile_skill_by_embedding():
    enc = HashingEncoder(64)
    profile = Profile(("a", "b", "c"), ("algebra", "law"), COUNTS, enc.encode(["algebra", "law"]), None)
    router = SkillsRouter(profile, sample=False)
    # "torts law" is not a profile skill; its vector (here: that of "law") finds the nearest one
    d = router.route(RouteRequest("q", metadata={"skills": ["torts law"],
                                                 "skill_embeddings": enc.encode(["law"])}),
                     candidates(("a", "b", "c")), k=1)
    assert d.experts == ["b"]                 # law: S = [-1, 1, 0]
    assert d.choices[0].why["skills"] == {"law": 1}
    with pytest.raises(InvalidRequest, match="nearest profile skills"):
        router.route(RouteRequest("q", metadata={"skills": ["torts"]}), candidates(("a", "b")), 1)


def test_fitted_router_uses_labels_then_embedding():
    outcomes = two_topic_outcomes()
    router = SkillsRouter(build_profile(outcomes), sample=False)
    cands = candidates()
    assert router.route(RouteRequest("q", metadata={"category": "law"}), cands, 1).experts == ["lawyer"]
    emb = HashingEncoder(64).encode(["integral derivative algebra"])[0]
    d = router.route(RouteRequest("integral derivative algebra", emb), cands, 1)
    assert d.experts == ["mathy"] and "from embedding" in d.reason


def test_errors_are_clear(tmp_path):
    router = SkillsRouter(hand_profile())
    with pytest.raises(InvalidRequest, match="empty prompt"):
        router.route(RouteRequest("  ", metadata={"skills": ["law"]}), candidates(("a",)), 1)
    with pytest.raises(ConfigError, match="rebuild it"):
        router.route(RouteRequest("q", metadata={"skills": ["law"]}), candidates(("mathy",)), 1)
    with pytest.raises(InvalidRequest, match="needs the request's skills"):
        router.route(RouteRequest("q"), candidates(("a",)), 1)
    with pytest.raises(ConfigError, match="conclave profile build"):
        ROUTERS["skills"](state=str(tmp_path / "nothing"))


def test_unprofiled_candidates_go_last():
    d = SkillsRouter(hand_profile(), sample=False).route(
        RouteRequest("q", metadata={"skills": ["law"]}), candidates(("a", "b", "mathy")), 3)
    assert d.experts == ["b", "a", "mathy"] and d.choices[-1].why == {"profiled": False}


def test_state_round_trip(tmp_path):
    outcomes = two_topic_outcomes()
    router = SkillsRouter(build_profile(outcomes, encoder=HashingEncoder(64)), sample=False, seed=5)
    router.save(tmp_path / "s", {"fit_on": {"x": 1}})
    loaded = ROUTERS["skills"](state=str(tmp_path / "s"))
    assert loaded.options() == router.options()
    assert np.array_equal(loaded.profile.counts, router.profile.counts)
    assert loaded.profile.skills == router.profile.skills


def test_zero_weight_experts_follow_the_papers_shifted_ranking():
    # skill 0: S = [-3, 2, 0]; G = [2, 2, 4] (no shift) -> gamma = [1/6, 1/6, 2/3]
    # only b has S > 0; the rest by (S - min S + 1) * gamma = [1/6, -, 8/3]: c before a
    profile = Profile(("a", "b", "c"), ("algebra", "law"), np.array([[-3, 5], [2, 0], [0, 4]]), None, None)
    d = SkillsRouter(profile, sample=False).route(
        RouteRequest("q", metadata={"skills": ["algebra"]}), candidates(("a", "b", "c")), 3)
    assert d.experts == ["b", "c", "a"]
    assert [c.score for c in d.choices] == pytest.approx([1.0, 0.0, 0.0])
