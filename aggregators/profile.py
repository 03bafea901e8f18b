"""The aggregation-ability profile: which expert synthesises best (Symbolic-MoE).

As in the paper, every candidate aggregator gets validation multiple-choice
questions with three shuffled candidate responses (1 right, 2 wrong) in the
synthesis prompt, and is scored by how often its synthesis ends on the right
letter.  The model calls stay outside this module:

1. :func:`build_tasks` (pure) turns MMLU dev records into :class:`ProfileTask`\\ s,
2. the caller sends each task's ``messages`` to each expert,
3. :func:`score_outputs` (pure) scores the outputs, :func:`build_profile` ranks them,
4. :func:`save_profile` / :func:`load_profile` keep it as JSON, and
   :func:`best_aggregator` picks the aggregator among the experts available now.

Simplification: when no recorded expert chains exist for a question, the
candidates are short synthetic reasoning chains that each argue for one option
and end in "The answer is (X)".  They test whether the aggregator can tell the
right option among plausible-looking ones, not whether it can audit long real
chains; pass ``recorded`` (question id -> real responses) to use real ones.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from experts_registry.errors import ConfigError, ValidationFailed

from .extract import choice_letters, extract_choice
from .synthesis import synthesis_messages

DEV_DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "mmlu" / "dev.jsonl.gz"

_TEMPLATES = (
    "Let's think step by step. The question asks about {topic}. Option ({letter}), \"{text}\", "
    "is consistent with the relevant facts, while the other options each contain an error. "
    "The answer is ({letter}).",
    "Going through the options one by one, ({letter}) \"{text}\" is the only one that fits what "
    "is asked; the others can be ruled out. The answer is ({letter}).",
    "Eliminating the options that are clearly wrong leaves ({letter}): \"{text}\". "
    "It agrees with the standard result for {topic}. The answer is ({letter}).",
)


@dataclass(frozen=True)
class ProfileTask:
    id: str
    question: str                        # the question followed by its lettered options
    gold: str                            # the correct letter
    choices: str                         # the allowed letters, e.g. "ABCD"
    candidates: tuple[str, ...]          # shuffled responses: 1 right, the rest wrong
    candidate_answers: tuple[str, ...]   # the letter each candidate concludes with
    source: str                          # "synthetic", "recorded" or "mixed"
    messages: list[dict[str, str]]       # the synthesis prompt to send to each expert


def read_records(path: str | os.PathLike = DEV_DATA) -> list[dict]:
    """MMLU records from a ``.jsonl.gz`` file (default: the shipped dev split)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def format_question(record: Mapping[str, Any]) -> str:
    """``question`` then one "(A) option" line per choice."""
    options = [f"({letter}) {text}" for letter, text in zip(choice_letters(len(record["choices"])),
                                                            record["choices"])]
    return "\n".join([record["question"].strip(), *options])


def synthetic_chain(record: Mapping[str, Any], letter: str, rng: random.Random) -> str:
    """A short reasoning chain arguing for option ``letter``, ending in "The answer is (X)"."""
    text = record["choices"][choice_letters(len(record["choices"])).index(letter)]
    topic = str(record.get("subject", "this subject")).replace("_", " ")
    return rng.choice(_TEMPLATES).format(letter=letter, text=text, topic=topic)


def build_tasks(records: Sequence[Mapping[str, Any]], *, n: int | None = None, seed: int = 0,
                n_wrong: int = 2, recorded: Mapping[str, Sequence[str]] | None = None,
                max_chars: int = 4000) -> list[ProfileTask]:
    """Validation tasks, deterministic for a given ``seed``.

    ``n`` questions are drawn (all when None); each gets 1 right and ``n_wrong``
    wrong candidates, shuffled.  With ``recorded`` (record id -> real responses),
    real right/wrong responses are used first and synthetic chains fill the gaps.
    """
    chosen = list(records)
    random.Random(seed).shuffle(chosen)
    if n is not None:
        chosen = chosen[:n]
    return [_task(r, seed, n_wrong, (recorded or {}).get(r["id"], ()), max_chars) for r in chosen]


def _task(record: Mapping[str, Any], seed: int, n_wrong: int, real: Sequence[str],
          max_chars: int) -> ProfileTask:
    letters = choice_letters(len(record["choices"]))
    gold = record["answer"]
    if gold not in letters or not 1 <= n_wrong < len(letters):
        raise ValidationFailed(f"record {record['id']!r}: answer {gold!r} or n_wrong={n_wrong} does not "
                               f"fit its {len(letters)} options")
    rng = random.Random(f"{seed}:{record['id']}")
    right = [t for t in real if extract_choice(t, letters) == gold][:1]
    wrong = [t for t in real if extract_choice(t, letters) not in (None, gold)][:n_wrong]
    used = len(right) + len(wrong)
    if not right:
        right = [synthetic_chain(record, gold, rng)]
    taken = {extract_choice(t, letters) for t in wrong}
    spare = [x for x in letters if x != gold and x not in taken]
    wrong += [synthetic_chain(record, x, rng) for x in rng.sample(spare, n_wrong - len(wrong))]
    candidates = right + wrong
    rng.shuffle(candidates)
    source = "synthetic" if used == 0 else "recorded" if used == 1 + n_wrong else "mixed"
    question = format_question(record)
    return ProfileTask(id=record["id"], question=question, gold=gold, choices=letters,
                       candidates=tuple(candidates),
                       candidate_answers=tuple(extract_choice(c, letters) or "" for c in candidates),
                       source=source,
                       messages=synthesis_messages(question, candidates, letters, max_chars=max_chars))


def score_outputs(tasks: Sequence[ProfileTask],
                  outputs: Mapping[str, Mapping[str, str | None]]) -> dict[str, dict[str, Any]]:
    """Accuracy per expert from ``outputs[expert][task_id]`` (None = the call failed, counted wrong;
    a task missing from an expert's outputs was not attempted and is not counted)."""
    by_id = {t.id: t for t in tasks}
    scores = {}
    for expert, answers in outputs.items():
        unknown = sorted(set(answers) - set(by_id))
        if unknown:
            raise ValidationFailed(f"outputs of {expert!r} name unknown tasks: {', '.join(unknown[:5])}")
        parsed = {tid: (extract_choice(text, by_id[tid].choices) if text is not None else None)
                  for tid, text in answers.items()}
        correct = sum(parsed[tid] == by_id[tid].gold for tid in parsed)
        n = len(parsed)
        scores[expert] = {"accuracy": round(correct / n, 4) if n else 0.0, "n": n, "correct": correct,
                          "failed": sum(text is None for text in answers.values()),
                          "unparsed": sum(a is None and answers[t] is not None for t, a in parsed.items())}
    return scores


def build_profile(scores: Mapping[str, Mapping[str, Any]], *, built_from: Any,
                  created: str | None = None) -> dict[str, Any]:
    """The profile document; ``best`` is the most accurate expert (more tasks, then name, break ties)."""
    rated = [name for name, s in scores.items() if s.get("n", 0) > 0]
    if not rated:
        raise ValidationFailed("no expert was scored on any task: cannot build an aggregation profile")
    best = min(rated, key=lambda e: (-scores[e]["accuracy"], -scores[e]["n"], e))
    return {"experts": {name: dict(s) for name, s in scores.items()}, "best": best,
            "built_from": built_from,
            "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_profile(profile: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the profile as JSON (atomically: a reader never sees half a file)."""
    _check(profile, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_profile(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a profile written by :func:`save_profile`."""
    try:
        profile = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no aggregation profile at {path}: build one with "
                          "`conclave profile aggregators`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the aggregation profile {path} ({exc}): rebuild it with "
                          "`conclave profile aggregators`") from None
    _check(profile, str(path))
    return profile


def _check(profile: Any, where: str) -> None:
    experts = profile.get("experts") if isinstance(profile, Mapping) else None
    ok = (isinstance(experts, Mapping) and experts and profile.get("best") in experts
          and all(isinstance(s, Mapping) and isinstance(s.get("accuracy"), (int, float))
                  and isinstance(s.get("n"), int) for s in experts.values()))
    if not ok:
        raise ConfigError(f"the aggregation profile {where} is malformed (needs 'experts' with "
                          "accuracy and n, and 'best'): rebuild it with `conclave profile aggregators`")


def best_aggregator(profile: Mapping[str, Any], available: Iterable[str]) -> str:
    """The profile's best expert if it is available, else the best-scored one still available;
    ConfigError when none of the profiled experts is available any more."""
    available = set(available)
    experts = profile["experts"]
    if profile["best"] in available:
        return profile["best"]
    present = [e for e in experts if e in available and experts[e].get("n", 0) > 0]
    if not present:
        raise ConfigError(f"the aggregation profile (created {profile.get('created', '?')}) scores "
                          f"{', '.join(sorted(experts))}, none of which is available now "
                          f"({', '.join(sorted(available)) or 'no experts'}): rebuild it with "
                          "`conclave profile aggregators`")
    return min(present, key=lambda e: (-experts[e]["accuracy"], -experts[e]["n"], e))
