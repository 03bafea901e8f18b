"""The aggregation-ability profile: tasks, scoring, save/load, choosing the aggregator."""

from __future__ import annotations

import json

import pytest

from aggregators.profile import (DEV_DATA, best_aggregator, build_profile, build_tasks, format_question,
                                 load_profile, read_records, save_profile, score_outputs)
from experts_registry.errors import ConfigError, ValidationFailed

RECORDS = [
    {"id": f"mmlu/dev/demo/{i}", "subject": "high_school_geography", "question": f"Question number {i}?",
     "choices": ["alpha", "beta", "gamma", "delta"], "answer": "ABCD"[i % 4], "answer_index": i % 4}
    for i in range(12)
]


def test_shipped_dev_data_is_read_from_the_project_tree():
    assert "shared" not in str(DEV_DATA) and DEV_DATA.is_file()
    records = read_records()
    assert len(records) == 285
    assert {"id", "question", "choices", "answer"} <= set(records[0])


def test_tasks_have_one_right_and_two_wrong_shuffled_candidates():
    tasks = build_tasks(RECORDS, seed=3)
    assert len(tasks) == len(RECORDS)
    positions = set()
    for t in tasks:
        assert sorted(t.candidate_answers).count(t.gold) == 1
        assert len(set(t.candidate_answers)) == 3 and set(t.candidate_answers) <= set("ABCD")
        assert all(c.rstrip().endswith(f"The answer is ({a}).")
                   for c, a in zip(t.candidates, t.candidate_answers))
        assert t.source == "synthetic" and t.choices == "ABCD"
        content = t.messages[0]["content"]
        assert t.question in content and all(c in content for c in t.candidates)
        positions.add(t.candidate_answers.index(t.gold))
    assert len(positions) > 1                          # the right one is not always in the same place


def test_tasks_are_deterministic_by_seed():
    a, b, c = (build_tasks(RECORDS, n=5, seed=s) for s in (7, 7, 8))
    assert a == b
    assert [t.id for t in a] != [t.id for t in c] or [t.candidates for t in a] != [t.candidates for t in c]
    assert len(a) == 5


def test_format_question_letters_the_options():
    assert format_question(RECORDS[1]) == "Question number 1?\n(A) alpha\n(B) beta\n(C) gamma\n(D) delta"


def test_recorded_candidates_are_used_first_and_gaps_filled():
    rec = RECORDS[2]                                   # gold C
    real = ["<think>hm</think>Gamma fits. The answer is (C).", "Delta, surely. The answer is (D).",
            "I don't know."]
    [task] = build_tasks([rec], recorded={rec["id"]: real})
    assert real[0] in task.candidates and real[1] in task.candidates and real[2] not in task.candidates
    assert task.source == "mixed"
    assert "<think>" not in task.messages[0]["content"] and "Gamma fits." in task.messages[0]["content"]
    assert {"C", "D"} < set(task.candidate_answers) and len(set(task.candidate_answers)) == 3
    full = real[:2] + ["Alpha it is. The answer is (A)."]
    [task] = build_tasks([rec], recorded={rec["id"]: full})
    assert task.source == "recorded" and set(task.candidates) == set(full)


def test_bad_record_is_rejected():
    bad = dict(RECORDS[0], answer="E")
    with pytest.raises(ValidationFailed):
        build_tasks([bad])


def _outputs(tasks, right_every):
    """An expert that synthesises the right letter on every ``right_every``-th task, else a wrong one."""
    out = {}
    for i, t in enumerate(tasks):
        letter = t.gold if i % right_every == 0 else next(x for x in "ABCD" if x != t.gold)
        out[t.id] = f"Weighing the responses... The answer is ({letter})."
    return out


def test_scoring_counts_right_wrong_failed_and_unparsed():
    tasks = build_tasks(RECORDS, n=10, seed=0)
    good = _outputs(tasks, 1)
    meh = _outputs(tasks, 2)
    meh[tasks[1].id] = None                            # the call failed
    meh[tasks[3].id] = "I refuse to choose."           # unparsable
    partial = {tasks[0].id: good[tasks[0].id]}
    scores = score_outputs(tasks, {"good": good, "meh": meh, "partial": partial})
    assert scores["good"] == {"accuracy": 1.0, "n": 10, "correct": 10, "failed": 0, "unparsed": 0}
    assert scores["meh"] == {"accuracy": 0.5, "n": 10, "correct": 5, "failed": 1, "unparsed": 1}
    assert scores["partial"]["n"] == 1
    with pytest.raises(ValidationFailed):
        score_outputs(tasks, {"x": {"nope": "The answer is (A)"}})


def test_profile_best_save_load_roundtrip(tmp_path):
    scores = {"small": {"accuracy": 0.6, "n": 10}, "big": {"accuracy": 0.8, "n": 10},
              "lucky": {"accuracy": 0.8, "n": 5}}
    profile = build_profile(scores, built_from={"data": "mmlu dev", "tasks": 10, "seed": 0},
                            created="2026-11-23T04:00:00+00:00")
    assert profile["best"] == "big"                    # same accuracy as lucky, more tasks
    path = save_profile(profile, tmp_path / "deep" / "aggregators.json")
    assert json.loads(path.read_text())["best"] == "big"
    assert load_profile(path) == profile


def test_load_errors_say_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="conclave profile aggregators"):
        load_profile(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="rebuild"):
        load_profile(broken)
    broken.write_text(json.dumps({"experts": {"a": {"accuracy": 1.0, "n": 3}}, "best": "zz"}))
    with pytest.raises(ConfigError, match="malformed"):
        load_profile(broken)


def test_build_profile_needs_some_scored_expert():
    with pytest.raises(ValidationFailed):
        build_profile({"a": {"accuracy": 0.0, "n": 0}}, built_from="x")


def test_best_aggregator_among_available_experts():
    profile = build_profile({"big": {"accuracy": 0.8, "n": 10}, "mid": {"accuracy": 0.7, "n": 10},
                             "small": {"accuracy": 0.5, "n": 10}}, built_from="t")
    assert best_aggregator(profile, ["small", "mid", "big", "new"]) == "big"
    assert best_aggregator(profile, ["small", "mid"]) == "mid"     # best one gone: next still present
    with pytest.raises(ConfigError) as info:
        best_aggregator(profile, ["other", "new"])
    assert "big, mid, small" in info.value.message and "conclave profile aggregators" in info.value.message
