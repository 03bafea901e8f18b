"""Shared test data for the router tests: two-topic outcomes with known specialists."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np

from router.encoder import HashingEncoder
from router.evaluation import replay_experts
from router.outcomes import Outcomes

TOPICS = {
    "math": ["integral derivative algebra equation", "matrix eigenvalue polynomial root",
             "probability variance integral limit", "algebra equation polynomial solve"],
    "law": ["contract tort plaintiff court", "statute defendant jury appeal",
            "constitution court ruling plaintiff", "tort negligence defendant liability"],
}
EXPERTS = ("mathy", "lawyer", "middling")


def two_topic_outcomes(n_per_topic: int = 30, seed: int = 0, encoder=None) -> Outcomes:
    """'mathy' is right on math, 'lawyer' on law, 'middling' on every third question."""
    rng = np.random.default_rng(seed)
    encoder = encoder or HashingEncoder(64)
    texts, cats, correct, answers = [], [], [], []
    for topic, templates in TOPICS.items():
        for i in range(n_per_topic):
            words = templates[i % len(templates)].split()
            texts.append(" ".join(rng.permutation(words)) + f" case {i}")
            cats.append(topic)
            row = [topic == "math", topic == "law", i % 3 == 0]
            correct.append(row)
            answers.append([0 if ok else 1 + j for j, ok in enumerate(row)])
    n = len(texts)
    return Outcomes(EXPERTS, np.array(correct, dtype=np.float32), tuple(texts),
                    {"category": cats, "src": [f"ori_mmlu-{c}" for c in cats]}, encoder.encode(texts),
                    {"mathy": 7.0, "lawyer": 13.0, "middling": 3.8}, tuple(range(n)),
                    np.array(answers, dtype=np.int16), np.zeros(n, dtype=np.int16))


def candidates(names=EXPERTS):
    return replay_experts(names, {"mathy": 7.0, "lawyer": 13.0, "middling": 3.8})


GOLD = "ABCDABE"
ANSWERS = {"A_col": ["A", "B", "C", "D", "B", "NONE", "A"],
           "B_col": ["A", "C", "C", "A", "A", "B", "B"],
           "C_col": ["B", "B", "", "D", "A", "C", "C"]}
CATS = ["math"] * 4 + ["law"] * 3


def write_replay_files(tmp_path):
    """Seven questions, three models (a 7B, b 13B, c 3.8B) with NONE and blank answers."""
    q = tmp_path / "q.jsonl.gz"
    with gzip.open(q, "wt") as f:
        for i, cat in enumerate(CATS):
            words = "integral algebra equation" if cat == "math" else "court tort plaintiff"
            f.write(json.dumps({"question_id": 100 + i, "question": f"{words} number {i}?",
                                "options": ["x", "y", "z"], "category": cat, "src": f"ori_mmlu-{cat}"}) + "\n")
    p = tmp_path / "p.csv.gz"
    with gzip.open(p, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question_id", "gold", *ANSWERS])
        for i in range(len(GOLD)):
            w.writerow([100 + i, GOLD[i], *[ANSWERS[c][i] for c in ANSWERS]])
    m = tmp_path / "models.json"
    m.write_text(json.dumps({"models": [{"column": "A_col", "id": "a", "active_params_b": 7},
                                        {"column": "B_col", "id": "b", "active_params_b": 13},
                                        {"column": "C_col", "id": "c", "active_params_b": 3.8}],
                             "pools": {"three": ["a", "b", "c"], "two": ["a", "b"]}}))
    return q, p, m
