"""Replay files: questions (jsonl[.gz]), recorded answers (csv[.gz]) and models.json.

Format (the one of ``benchmarks/data/mmlu-pro``, the recorded answers read by default: a data path
inside the ``benchmarks`` package, not an import):
- questions: one JSON object per line with ``question_id``, ``question``,
  ``options`` and optional labels ``category``, ``src``, ``subject``;
- predictions: ``question_id``, ``gold`` and one column per model holding its
  answer letter A-J, ``NONE`` (unparsable: counts as wrong) or blank (no record);
- models.json: ``models`` (``column``, ``id``, ``active_params_b``) and ``pools``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import numpy as np

from experts_registry.errors import InvalidRequest, ValidationFailed
from router.outcomes import Outcomes
from router.vote import LETTERS, NO_ANSWER

DATA_DIR = Path(__file__).parent.parent / "benchmarks" / "data" / "mmlu-pro"
DEFAULTS = {"questions": DATA_DIR / "questions.jsonl.gz", "predictions": DATA_DIR / "predictions.csv.gz",
            "models": DATA_DIR / "models.json"}
NO_RECORD = -2
LABELS = ("category", "src", "subject")


def _open(path) -> io.TextIOBase:
    path = Path(path)
    if not path.is_file():
        raise InvalidRequest(f"replay file not found: {path}")
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


@dataclass(frozen=True)
class ModelsInfo:
    columns: Mapping[str, str]                 # csv column -> expert id
    active_params: Mapping[str, float | None]  # expert id -> billions
    pools: Mapping[str, tuple[str, ...]]

    def pool(self, name: str | None) -> tuple[str, ...]:
        if not name or name == "all":
            return tuple(self.columns.values())
        if name not in self.pools:
            raise InvalidRequest(f"unknown pool {name!r}: models.json defines "
                                 f"{', '.join(sorted(self.pools)) or 'no pools'} (or use 'all')", param="pool")
        return tuple(self.pools[name])


def load_models(path=DEFAULTS["models"]) -> ModelsInfo:
    with _open(path) as f:
        data = json.load(f)
    try:
        columns = {m["column"]: m["id"] for m in data["models"]}
        params = {m["id"]: m.get("active_params_b") for m in data["models"]}
    except (KeyError, TypeError) as exc:
        raise ValidationFailed(f"{path}: every model needs 'column' and 'id' ({exc})") from exc
    return ModelsInfo(columns, params, {k: tuple(v) for k, v in data.get("pools", {}).items()})


def load_questions(path=DEFAULTS["questions"]) -> dict[str, dict]:
    out = {}
    with _open(path) as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                q = json.loads(line)
                if "question_id" not in q or not str(q.get("question", "")).strip():
                    raise ValidationFailed(f"{path}:{line_no}: a question needs question_id and question")
                out[str(q["question_id"])] = q
    return out


def prompt_text(q: Mapping) -> str:
    """The prompt as a user would send it: the question, then lettered options."""
    options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate((q.get("options") or [])[:10]))
    return f"{q['question'].strip()}\n{options}".strip()


def _letter(value: str) -> int:
    value = value.strip().upper()
    if value == "":
        return NO_RECORD
    if len(value) == 1 and value in LETTERS:
        return LETTERS.index(value)
    return NO_ANSWER                                 # NONE or anything unparsable


def load_predictions(path, models: ModelsInfo, experts: tuple[str, ...]):
    """(question ids, gold (n,), answers (n, len(experts))) for the requested experts."""
    by_id = {v: k for k, v in models.columns.items()}
    with _open(path) as f:
        rows = list(csv.DictReader(f))
    header = rows[0].keys() if rows else []
    missing = [e for e in experts if by_id.get(e) not in header]
    if not rows or "question_id" not in header or "gold" not in header or missing:
        raise ValidationFailed(f"{path}: needs columns question_id, gold and one per expert"
                               + (f"; missing {', '.join(missing)}" if missing else ""))
    qids = [str(r["question_id"]) for r in rows]
    gold = np.array([_letter(r["gold"]) for r in rows], dtype=np.int8)
    if (gold < 0).any():
        raise ValidationFailed(f"{path}: question {qids[int(np.argmax(gold < 0))]} has no gold letter")
    answers = np.array([[_letter(r[by_id[e]]) for e in experts] for r in rows], dtype=np.int8)
    return qids, gold, answers.reshape(len(rows), len(experts))


@dataclass(frozen=True)
class ReplaySet:
    question_ids: tuple[str, ...]
    texts: tuple[str, ...]
    labels: Mapping[str, tuple[str, ...]]
    experts: tuple[str, ...]
    answers: np.ndarray                    # (n, m) int8: 0-9, NO_ANSWER, NO_RECORD
    gold: np.ndarray                       # (n,) int8
    active_params: Mapping[str, float | None]

    def __len__(self) -> int:
        return len(self.question_ids)

    def correct(self) -> np.ndarray:
        right = (self.answers == self.gold[:, None]).astype(np.float32)
        return np.where(self.answers == NO_RECORD, np.nan, right)

    def subset(self, rows) -> "ReplaySet":
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        pick = lambda seq: tuple(seq[i] for i in rows)  # noqa: E731
        return replace(self, question_ids=pick(self.question_ids), texts=pick(self.texts),
                       labels={k: pick(v) for k, v in self.labels.items()},
                       answers=self.answers[rows], gold=self.gold[rows])

    def outcomes(self, embeddings: np.ndarray | None = None) -> Outcomes:
        return Outcomes(self.experts, self.correct(), self.texts, dict(self.labels), embeddings,
                        dict(self.active_params), self.question_ids, self.answers, self.gold)

    def metadata(self, i: int) -> dict:
        return {k: v[i] for k, v in self.labels.items() if v[i]}


def load_replay(questions, predictions, models: ModelsInfo, pool: str | None) -> ReplaySet:
    experts = models.pool(pool)
    qs = load_questions(questions)
    qids, gold, answers = load_predictions(predictions, models, experts)
    keep = [i for i, q in enumerate(qids) if q in qs]
    if not keep:
        raise ValidationFailed(f"no question of {predictions} is in {questions}: wrong pair of files?")
    ids = tuple(qids[i] for i in keep)
    labels = {k: tuple(str(qs[q].get(k) or "") for q in ids) for k in LABELS
              if any(k in qs[q] for q in ids)}
    return ReplaySet(ids, tuple(prompt_text(qs[q]) for q in ids), labels, experts,
                     answers[keep], gold[keep], {e: models.active_params.get(e) for e in experts})


def hash_split(question_ids, seed: int = 0, test_fraction: float = 0.2) -> np.ndarray:
    """Boolean mask of the test side: a seeded hash of each question id, stable across runs."""
    if not 0.0 < test_fraction < 1.0:
        raise InvalidRequest("test_fraction must be between 0 and 1", param="test_fraction")
    h = [int.from_bytes(hashlib.sha256(f"{seed}:{q}".encode()).digest()[:8], "big") for q in question_ids]
    return np.array(h, dtype=np.float64) / 2.0**64 < test_fraction
