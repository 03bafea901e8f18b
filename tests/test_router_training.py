"""router.training: train + validate + save, load by name, profiles from replay files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experts_registry.errors import ConfigError, InvalidRequest, ValidationFailed
from router import RouteRequest
from router.encoder import HashingEncoder
from router.training import load_router, profile_from_replay, train_router
from tests.router_fakes import candidates, two_topic_outcomes, write_replay_files


@pytest.mark.parametrize("name", ["skills", "coe", "knn"])
def test_train_saves_state_with_metadata_and_validation(tmp_path, name):
    outcomes = two_topic_outcomes(n_per_topic=40)
    meta = train_router(name, outcomes, tmp_path / name, encoder=HashingEncoder(64),
                        fit_on={"questions": "two-topic fake"})
    saved = json.loads((tmp_path / name / "meta.json").read_text())
    assert saved["router"] == name and saved["fit_on"] == {"questions": "two-topic fake"}
    assert saved["n_questions"] == 80 and saved["experts"] == ["mathy", "lawyer", "middling"]
    val = meta["validation"]
    assert 0 < val["n"] < 80 and val["k1"]["n"] == val["n"]
    assert val["k1"]["accuracy"] >= 0.9           # specialists are easy to find on this data
    router = load_router(name, tmp_path / name, **({"sample": False} if name == "skills" else {}))
    text = "tort plaintiff court"
    d = router.route(RouteRequest(text, HashingEncoder(64).encode([text])[0], {"category": "law"}),
                     candidates(), 1)
    assert d.experts == ["lawyer"] and d.reason


def test_bad_names_and_missing_state(tmp_path):
    with pytest.raises(InvalidRequest, match="cannot be trained"):
        train_router("tags", two_topic_outcomes(), tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown router 'nope'"):
        load_router("nope")
    with pytest.raises(ConfigError, match="no trained state"):
        load_router("knn", tmp_path / "never-trained")
    assert load_router("tags").name == "tags"


def test_profile_from_replay_files(tmp_path):
    q, p, m = write_replay_files(tmp_path)
    profile = profile_from_replay(q, p, m, "three", tmp_path / "profile")
    # math: a right 4/4 -> +4; law: a wrong on all 3 -> -3 (NONE is wrong)
    assert profile.row("a") == {"math": 4, "law": -3}
    # c on math: wrong, right, blank (no count), right -> +1; on law: right, wrong, wrong -> -1
    assert profile.row("c") == {"math": 1, "law": -1}
    meta = json.loads((tmp_path / "profile" / "meta.json").read_text())
    assert meta["fit_on"]["pool"] == "three" and meta["n_questions"] == 7
    only = profile_from_replay(q, p, m, "three", tmp_path / "p2", experts=["b"])
    assert only.experts == ("b",)
    with pytest.raises(ValidationFailed, match="no recorded outcomes for expert"):
        profile_from_replay(q, p, m, "three", tmp_path / "p3", experts=["zz"])
    assert np.array_equal(load_router("skills", tmp_path / "profile").profile.counts, profile.counts)


@pytest.mark.parametrize("name", ["skills", "coe", "knn"])
def test_registry_factories_take_the_gateways_options(tmp_path, name):
    how = "conclave profile build" if name == "skills" else f"conclave router train {name}"
    with pytest.raises(ConfigError, match=how):
        load_router(name, None, generalist="mathy")
    train_router(name, two_topic_outcomes(), tmp_path / name, encoder=HashingEncoder(64))
    assert load_router(name, tmp_path / name, generalist="mathy").name == name
