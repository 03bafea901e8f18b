"""``conclave profile build`` live: the registered experts answer validation questions (MMLU dev,
zero-shot chain of thought, "The answer is (X)"), and their right/wrong answers become
:class:`~router.outcomes.Outcomes` — the same thing replay files give — saved under
``$CONCLAVE_HOME/outcomes/`` for ``conclave router train --live``.
Each expert answers all its questions in a row, so it is loaded once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from aggregators.extract import choice_letters, extract_choice
from aggregators.profile import format_question
from experts_registry.errors import ConclaveError, ConfigError

from ..backends import GenParams, collect

INSTRUCTION = ("Answer the following multiple choice question. Think step by step, then finish with "
               "\"The answer is (X)\" where X is the letter of the correct option.\n\n")
LABELS = ("subject", "subcategory", "category")


def outcomes_dir(home: Path) -> Path:
    return Path(home) / "outcomes"


async def answer_all(gw, experts, records, params: GenParams, progress=True) -> dict[str, list[str | None]]:
    """{expert: [letter or None per record]}; a failed call counts as no answer (wrong)."""
    import click

    out: dict[str, list[str | None]] = {}
    for expert in experts:
        letters = []
        with click.progressbar(records, label=f"{expert.name:24}", file=sys.stderr) as bar:
            for record in bar:
                messages = [{"role": "user", "content": INSTRUCTION + format_question(record)}]
                try:
                    text = (await collect(gw.call(expert, messages, params))).text
                except ConclaveError:
                    text = ""
                letters.append(extract_choice(text, choice_letters(len(record["choices"]))))
        out[expert.name] = letters
    return out


def to_outcomes(records, experts, answers: dict[str, list[str | None]], encoder=None):
    from router.outcomes import Outcomes

    names = tuple(e.name for e in experts)
    gold = np.array([ord(r["answer"]) - 65 for r in records])
    given = np.array([[ord(a) - 65 if a else -1 for a in answers[n]] for n in names]).T
    texts = tuple(format_question(r) for r in records)
    return Outcomes(experts=names, correct=(given == gold[:, None]).astype(np.float32), texts=texts,
                    labels={k: [r.get(k, "") for r in records] for k in LABELS},
                    embeddings=encoder.encode(list(texts)) if encoder is not None else None,
                    active_params={e.name: e.params_b for e in experts},
                    question_ids=tuple(r["id"] for r in records), answers=given, gold=gold)


def save_outcomes(outcomes, folder: Path, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "live.npz", correct=outcomes.correct, answers=outcomes.answers, gold=outcomes.gold)
    doc = {"experts": list(outcomes.experts), "texts": list(outcomes.texts), "labels": outcomes.labels,
           "question_ids": list(outcomes.question_ids), "active_params": dict(outcomes.active_params), **meta}
    (folder / "live.json").write_text(json.dumps(doc, indent=1))
    return folder / "live.json"


def load_outcomes(folder: Path, encoder=None):
    from router.outcomes import Outcomes

    path = folder / "live.json"
    if not path.is_file():
        raise ConfigError(f"no live outcomes in {folder}: run 'conclave profile build' first")
    doc = json.loads(path.read_text())
    arrays = np.load(folder / "live.npz")
    return Outcomes(experts=tuple(doc["experts"]), correct=arrays["correct"], texts=tuple(doc["texts"]),
                    labels=doc["labels"], active_params=doc["active_params"],
                    question_ids=tuple(doc["question_ids"]), answers=arrays["answers"], gold=arrays["gold"],
                    embeddings=encoder.encode(doc["texts"]) if encoder is not None else None)
