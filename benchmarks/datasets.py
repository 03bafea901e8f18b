"""Multiple-choice benchmark questions shipped in ``benchmarks/data``: one shape for every dataset.

    load_questions("mmlu", subset="STEM", limit=200, seed=0)  -> [Question, ...]

dataset    questions                               subject / category              exemplars
mmlu       MMLU test, 14,042                       57 subjects / STEM, humanities, the subject's 5 dev questions
                                                   social, other
mmlu-pro   shipped MMLU-Pro subset, 8,400 (3-10)   category / category             same category, never q
gpqa       GPQA diamond, 198                       diamond / science (no labels)   main minus diamond, 249
medmcqa    MedMCQA validation, 4,183               medicine / medicine (no labels) a 504-question train subset

GPQA is read in memory from its password-protected zip (the authors ask that the
questions never appear in plain text online): nothing is extracted or cached on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from experts_registry.errors import ConfigError, InvalidRequest

DATA_DIR = Path(__file__).parent / "data"
GPQA_ZIP = DATA_DIR / "gpqa" / "gpqa.zip"
GPQA_PASSWORD = b"deserted-untie-orchid"          # GPQA's own scheme, published with the data
LETTERS = "ABCDEFGHIJ"
MMLU_CATEGORIES = {"STEM": "STEM", "humanities": "humanities", "social sciences": "social",
                   "other (business, health, misc.)": "other"}


@dataclass(frozen=True)
class Question:
    id: str                    # stable and unique within its dataset, e.g. "mmlu/test/college_physics/17"
    dataset: str               # "mmlu" | "mmlu-pro" | "gpqa" | "medmcqa"
    subject: str               # fine label
    category: str              # coarse label for per-category tables
    question: str
    choices: tuple[str, ...]   # options in order; letter i = LETTERS[i]
    answer: str                # gold letter

    @property
    def letters(self) -> str:
        return LETTERS[:len(self.choices)]


# ---- raw loaders (cached in memory only) -------------------------------------------------------

def _jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _json_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _mmlu_row(row: dict) -> Question:
    return Question(id=row["id"], dataset="mmlu", subject=row["subject"],
                    category=MMLU_CATEGORIES.get(row["category"], row["category"]),
                    question=row["question"].strip(), choices=tuple(str(c).strip() for c in row["choices"]),
                    answer=row["answer"])


@lru_cache(maxsize=None)
def _mmlu(split: str) -> tuple[Question, ...]:
    return tuple(_mmlu_row(r) for r in _jsonl_gz(DATA_DIR / "mmlu" / f"{split}.jsonl.gz"))


@lru_cache(maxsize=None)
def _mmlu_pro() -> tuple[Question, ...]:
    out = []
    for r in _jsonl_gz(DATA_DIR / "mmlu-pro" / "questions.jsonl.gz"):
        cat = str(r.get("category") or "other")
        out.append(Question(id=f"mmlu-pro/{r['question_id']}", dataset="mmlu-pro", subject=cat, category=cat,
                            question=r["question"].strip(), choices=tuple(str(o).strip() for o in r["options"]),
                            answer=r["answer"]))
    return tuple(out)


def split_inline_options(text: str, n: int = 4) -> tuple[str, tuple[str, ...]]:
    """``"Q? The options are: (A) x (B) y ..."`` -> ``("Q?", ("x", "y", ...))``.

    Options are found in order, so an option such as "Both (A) & (C)" stays whole."""
    head, sep, tail = text.rpartition("The options are:")
    starts, pos = [], 0
    for letter in LETTERS[:n]:
        pos = tail.find(f"({letter})", pos)
        if not sep or pos < 0:
            raise ConfigError(f"cannot split the options of a question: {text[:60]!r}...")
        starts.append(pos)
        pos += 3
    ends = starts[1:] + [len(tail)]
    return head.strip(), tuple(tail[a + 3:b].strip() for a, b in zip(starts, ends))


def _inline(rows: Iterable[dict], dataset: str, prefix: str, subject: str, category: str) -> tuple[Question, ...]:
    out = []
    for i, r in enumerate(rows):
        question, choices = split_inline_options(r["question"])
        out.append(Question(id=f"{prefix}/{i}", dataset=dataset, subject=subject, category=category,
                            question=question, choices=choices, answer=r["gold_answer"].strip()))
    return tuple(out)


def read_gpqa(name: str, path: Path = GPQA_ZIP, password: bytes = GPQA_PASSWORD) -> list[dict]:
    """One JSON member of the GPQA zip, decrypted in memory (never extracted, never cached on disk)."""
    if not Path(path).is_file():
        raise ConfigError(f"the GPQA archive {path} is missing: reinstall Conclave (it ships in "
                          "benchmarks/data/gpqa/gpqa.zip)")
    try:
        with zipfile.ZipFile(path) as z, z.open(name, pwd=password) as raw:
            return json.load(io.TextIOWrapper(raw, encoding="utf-8"))
    except (RuntimeError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot read {name} from {path} ({exc}): the archive is damaged or the "
                          "password is wrong; restore the shipped gpqa.zip") from exc


@lru_cache(maxsize=None)
def _gpqa(split: str) -> tuple[Question, ...]:
    member = {"diamond": "GPQA_test.json", "main": "GPQA_train.json"}[split]
    return _inline(read_gpqa(member), "gpqa", f"gpqa/{split}", split, "science")


@lru_cache(maxsize=None)
def _medmcqa(split: str) -> tuple[Question, ...]:
    file = {"validation": "validation.json.gz", "train": "train_subset.json.gz"}[split]
    return _inline(_json_gz(DATA_DIR / "medmcqa" / file), "medmcqa", f"medmcqa/{split}", "medicine", "medicine")


# ---- public API ---------------------------------------------------------------------------------

DATASETS: dict[str, Callable[..., list[Question]]] = {
    "mmlu": lambda: list(_mmlu("test")),
    "mmlu-pro": lambda: list(_mmlu_pro()),
    "gpqa": lambda: list(_gpqa("diamond")),
    "medmcqa": lambda: list(_medmcqa("validation")),
}

# Where each dataset's few-shot exemplars come from (MMLU: dev, per subject; see exemplars()).
_EXEMPLAR_POOLS: dict[str, Callable[[], tuple[Question, ...]]] = {
    "mmlu": lambda: _mmlu("dev"),
    "mmlu-pro": _mmlu_pro,
    "gpqa": lambda: _gpqa("main"),
    "medmcqa": lambda: _medmcqa("train"),
}


def _loader(dataset: str) -> Callable[..., list[Question]]:
    if dataset not in DATASETS:
        raise InvalidRequest(f"unknown dataset {dataset!r}: choose from {', '.join(DATASETS)}", param="dataset")
    return DATASETS[dataset]


def subsets(dataset: str) -> list[str]:
    """Valid ``subset`` names of a dataset: its categories, then its subjects."""
    qs = _loader(dataset)()
    cats = sorted({q.category for q in qs})
    return cats + sorted({q.subject for q in qs} - set(cats))


def _hash(*parts: object) -> bytes:
    return hashlib.sha256(":".join(map(str, parts)).encode()).digest()


def natural_key(text: str) -> tuple:
    """Sort "x/2" before "x/10"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text))


def load_questions(dataset: str, subset: str | None = None, limit: int | None = None,
                   seed: int = 0) -> list[Question]:
    """The dataset's questions, optionally one subject or category, optionally a seeded sample.

    The sample keeps the ``limit`` questions with the smallest ``sha256(seed:id)``, so it is
    the same for the same seed, and a smaller limit is a subset of a larger one.  The result
    is sorted by id (numbers in ids compare as numbers)."""
    qs = _loader(dataset)()
    if subset:
        qs = [q for q in qs if subset in (q.subject, q.category)]
        if not qs:
            raise InvalidRequest(f"{dataset} has no subset {subset!r}: choose from "
                                 f"{', '.join(subsets(dataset))}", param="subset")
    if limit is not None:
        if limit < 1:
            raise InvalidRequest(f"limit must be at least 1, not {limit}", param="limit")
        qs = sorted(qs, key=lambda q: _hash(seed, q.id))[:limit]
    return sorted(qs, key=lambda q: natural_key(q.id))


def exemplars(q: Question, shots: int) -> list[Question]:
    """``shots`` solved examples for ``q``, the same for every question of a subject.

    MMLU: the subject's dev questions in order.  Other datasets: their exemplar pool
    (see the module table) in a fixed hash order, same subject first, never ``q`` itself."""
    if shots <= 0:
        return []
    _loader(q.dataset)
    return [e for e in _ordered_pool(q.dataset, q.subject)[:shots + 1] if e.id != q.id][:shots]


@lru_cache(maxsize=256)
def _ordered_pool(dataset: str, subject: str) -> tuple[Question, ...]:
    pool = _EXEMPLAR_POOLS[dataset]()
    if dataset == "mmlu":
        return tuple(e for e in pool if e.subject == subject)
    return tuple(sorted(pool, key=lambda e: (e.subject != subject, _hash("exemplar", e.id))))
