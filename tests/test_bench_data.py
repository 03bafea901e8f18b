"""Benchmark data on the shipped files: loaders, seeded samples, GPQA kept encrypted, prompts, scoring."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aggregators.base import Candidate
from aggregators.extract import LETTERS, choice_letters, extract_answer
from aggregators.vote import VoteAggregator
from benchmarks import datasets
from benchmarks.datasets import DATASETS, exemplars, load_questions, natural_key, read_gpqa, subsets
from benchmarks.prompts import COT_INSTRUCTION, INSTRUCTION, messages_for, score
from experts_registry.bundled import BUNDLED
from experts_registry.errors import ConfigError, InvalidRequest
from service.core.prompting import chat_messages, completion_prompt

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"mmlu": 14042, "mmlu-pro": 8400, "gpqa": 198, "medmcqa": 4183}


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_loads_with_valid_letters(name):
    qs = load_questions(name)
    assert len(qs) == COUNTS[name]
    assert len({q.id for q in qs}) == len(qs)
    for q in qs:
        assert q.dataset == name and q.id.startswith(f"{name}/")
        assert 2 <= len(q.choices) <= 10 and all(c.strip() for c in q.choices)
        assert q.answer in choice_letters(len(q.choices)) and q.question and q.subject and q.category
    assert [q.id for q in qs] == sorted((q.id for q in qs), key=natural_key)


def test_labels_per_dataset():
    assert set(subsets("mmlu")[:4]) == {"STEM", "humanities", "social", "other"}
    assert "college_physics" in subsets("mmlu") and len(subsets("mmlu")) == 4 + 57
    pro = subsets("mmlu-pro")
    assert {q.category for q in load_questions("mmlu-pro")} == set(pro) and len(pro) == 14
    assert subsets("gpqa") == ["science", "diamond"] and subsets("medmcqa") == ["medicine"]
    assert max(len(q.choices) for q in load_questions("mmlu-pro")) == 10


def test_limit_is_a_seeded_stable_sample():
    a = load_questions("mmlu-pro", limit=30, seed=1)
    assert a == load_questions("mmlu-pro", limit=30, seed=1) and len(a) == 30
    assert a != load_questions("mmlu-pro", limit=30, seed=2)
    assert set(load_questions("mmlu-pro", limit=10, seed=1)) <= set(a)          # smaller = prefix of the hash order
    assert [q.id for q in a] == sorted((q.id for q in a), key=natural_key)
    assert len(load_questions("gpqa", limit=10_000)) == 198


def test_subset_filters_by_subject_or_category():
    physics = load_questions("mmlu", subset="college_physics")
    assert len(physics) == 102 and {q.subject for q in physics} == {"college_physics"}
    stem = load_questions("mmlu", subset="STEM", limit=50, seed=3)
    assert len(stem) == 50 and {q.category for q in stem} == {"STEM"}
    assert {q.category for q in load_questions("mmlu-pro", subset="law")} == {"law"}


def test_bad_names_are_clear_errors():
    with pytest.raises(InvalidRequest, match="unknown dataset 'mmlu2': choose from mmlu, mmlu-pro, gpqa, medmcqa"):
        load_questions("mmlu2")
    with pytest.raises(InvalidRequest, match="mmlu has no subset 'physic': choose from STEM, humanities"):
        load_questions("mmlu", subset="physic")
    with pytest.raises(InvalidRequest, match="limit"):
        load_questions("gpqa", limit=0)
    with pytest.raises(InvalidRequest, match="unknown dataset"):
        subsets("nope")


def test_exemplars():
    q = load_questions("mmlu", subset="college_physics")[17]
    ex = exemplars(q, 5)
    assert len(ex) == 5 and all(e.id.startswith("mmlu/dev/college_physics/") for e in ex)
    assert exemplars(q, 2) == ex[:2] and exemplars(q, 0) == [] and len(exemplars(q, 9)) == 5
    pro = load_questions("mmlu-pro", subset="law", limit=3)
    shots = [exemplars(p, 3) for p in pro]
    for p, ex in zip(pro, shots):
        assert len(ex) == 3 and p not in ex and {e.category for e in ex} == {"law"}
        assert ex == exemplars(p, 3)                                    # deterministic
    first = exemplars(shots[0][0], 3)                                   # an exemplar never gets itself
    assert shots[0][0] not in first and len(first) == 3
    g = load_questions("gpqa", limit=1)[0]
    assert all(e.id.startswith("gpqa/main/") for e in exemplars(g, 3))
    m = load_questions("medmcqa", limit=1)[0]
    assert all(e.id.startswith("medmcqa/train/") for e in exemplars(m, 3))


def test_inline_options_keep_nested_letters():
    question, choices = datasets.split_inline_options(
        "The largest commissure? The options are: (A) one (B) two (C) three (D) Both (A) & (C)")
    assert question == "The largest commissure?" and choices == ("one", "two", "three", "Both (A) & (C)")
    with pytest.raises(ConfigError):
        datasets.split_inline_options("no options here")


# ---- GPQA stays encrypted ----------------------------------------------------------------------

def test_gpqa_bad_zip_or_password_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="missing"):
        read_gpqa("GPQA_test.json", path=tmp_path / "gone.zip")
    with pytest.raises(ConfigError, match="password is wrong"):
        read_gpqa("GPQA_test.json", password=b"wrong-password")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="damaged"):
        read_gpqa("GPQA_test.json", path=tmp_path / "bad.zip")


def test_gpqa_is_read_in_memory_only(tmp_path):
    dirs = {name: tmp_path / name for name in ("cwd", "home", "tmp")}
    for d in dirs.values():
        d.mkdir()
    code = ("from benchmarks.datasets import load_questions, exemplars\n"
            "qs = load_questions('gpqa'); assert len(qs) == 198\n"
            "assert len(exemplars(qs[0], 3)) == 3\n")
    env = {**os.environ, "HOME": str(dirs["home"]), "TMPDIR": str(dirs["tmp"]), "PYTHONPATH": str(ROOT),
           "PYTHONDONTWRITEBYTECODE": "1", "CONCLAVE_HOME": str(dirs["home"] / "conclave")}
    subprocess.run([sys.executable, "-c", code], cwd=dirs["cwd"], env=env, check=True, timeout=60)
    assert [p for d in dirs.values() for p in d.rglob("*")] == []


def test_gpqa_plaintext_is_nowhere_in_the_shipped_data():
    needles = [q.question[:60].encode() for q in load_questions("gpqa", limit=5)]
    needles += [q.question[:60].encode() for q in exemplars(load_questions("gpqa")[0], 3)]
    files = [p for p in (ROOT / "benchmarks" / "data").rglob("*") if p.is_file()]
    assert any(p.name == "gpqa.zip" for p in files)
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".gz":
            data += gzip.decompress(data)
        assert not any(n in data for n in needles), p


# ---- prompts ------------------------------------------------------------------------------------

def test_zero_shot_and_cot_messages():
    q = load_questions("mmlu", subset="college_physics")[0]
    [m] = messages_for(q)
    assert m["role"] == "user" and m["content"].startswith(q.question)
    assert f"\nA. {q.choices[0]}\nB. " in m["content"] and m["content"].endswith(INSTRUCTION)
    [c] = messages_for(q, cot=True)
    assert c["content"].endswith("\n" + COT_INSTRUCTION) and INSTRUCTION not in c["content"]


def test_few_shot_messages_alternate_with_answers():
    q = load_questions("mmlu", subset="college_physics")[0]
    msgs = messages_for(q, shots=3)
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3 + ["user"]
    for ex, (u, a) in zip(exemplars(q, 3), zip(msgs[0::2], msgs[1::2])):
        assert u["content"].startswith(ex.question) and a["content"] == f"The answer is ({ex.answer})."
    assert INSTRUCTION not in msgs[-1]["content"]
    assert messages_for(q, shots=3, cot=True)[-1]["content"].endswith(COT_INSTRUCTION)


def test_letters_go_up_to_j():
    q = next(q for q in load_questions("mmlu-pro") if len(q.choices) == 10)
    content = messages_for(q)[-1]["content"]
    assert f"\nJ. {q.choices[9]}" in content and "\nK. " not in content


def test_one_message_list_serves_completion_and_chat_experts():
    q = load_questions("mmlu", subset="astronomy")[0]
    ex = exemplars(q, 2)
    msgs = messages_for(q, shots=2)
    prompt = completion_prompt(BUNDLED["gemma-3-270m"], msgs)
    opts = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(ex[0].choices))
    assert f"Question: {ex[0].question}\n{opts}\nAnswer: The answer is ({ex[0].answer}).\n\n" in prompt
    assert prompt.endswith(f"D. {q.choices[3]}\nAnswer:")
    assert prompt.count("Answer:") == 1 + 2 + 1              # gemma's own example, 2 shots, the question
    chat = chat_messages(BUNDLED["smollm2"], msgs)
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant", "user"]


# ---- scoring ------------------------------------------------------------------------------------

TEXTS = ["The answer is (B).", "<think>maybe A</think> **Answer:** C", "I think it is A or B", "answer is (J)",
         "\\boxed{D}", "", None, "Final: (C)"]


def test_score_uses_the_vote_aggregators_extraction():
    q = load_questions("mmlu", limit=1)[0]
    vote = VoteAggregator()
    for text in TEXTS:
        letter, correct = score(q, text)
        assert letter == extract_answer(text, "ABCD")
        assert correct == (letter == q.answer)
        if text:
            voted = vote.plan(q.question, [Candidate("x", text, 1.0)], choices="ABCD").detail["answers"]["x"]
            assert voted == letter, text
    assert score(q, "no idea") == (None, False)
    assert score(q, f"The answer is ({q.answer}).") == (q.answer, True)


def test_score_respects_the_questions_letters():
    q = next(q for q in load_questions("mmlu-pro") if len(q.choices) == 10)
    assert score(q, "The answer is (J).")[0] == "J"
    four = load_questions("mmlu", limit=1)[0]
    assert score(four, "The answer is (J).") == (None, False)
