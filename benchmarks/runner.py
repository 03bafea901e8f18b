"""``conclave bench run``, in process: benchmark questions through the gateway's own pipeline.

Three phases over the questions a run folder has not answered yet:

1. route: each question becomes the ChatRequest a client would send (an expert by name, or
   ``conclave-auto`` with router / k / aggregator) and goes through ``Gateway.resolve``;
2. generate: every (expert, question) call of every pending question, at once, with the offline
   batch schedule (:mod:`benchmarks.generate`: each local expert loaded once), each answer
   persisted as it finishes;
3. aggregate: as soon as a question has all its answers, the gateway's aggregator decides
   (synthesis: one more, batched, call), :func:`benchmarks.prompts.score` scores it and its
   record is appended to ``results.jsonl``.

A :class:`Cell` is one run; a sweep runs many cells through one :class:`Generator`, so an
answer one cell needs is generated once for all of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from aggregators.base import Candidate, Synthesize
from experts_registry.errors import InvalidRequest, UpstreamError
from experts_registry.model import Expert

from .datasets import Question, load_questions
from .generate import Answer, Call, Generator, Interrupted
from .prompts import messages_for, score


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's answers; its folder refuses a different one."""

    dataset: str
    subset: str | None = None
    limit: int | None = None
    seed: int = 0
    shots: int = 0
    cot: bool = True
    max_tokens: int = 256
    temperature: float = 0.0
    router: str | None = None          # None: one expert, experts[0], asked by name
    k: int = 1
    aggregator: str | None = None      # k > 1 only
    experts: tuple[str, ...] = ()      # routed: the candidates (empty: every registered expert)
    via: str = "in-process"            # or "http" (--url)
    registry: str = ""                 # digest of the expert records asked (a changed expert: a new run)

    def __post_init__(self) -> None:
        object.__setattr__(self, "experts", tuple(self.experts))
        if self.router is None and len(self.experts) != 1:
            raise InvalidRequest("a run without a router asks one expert: give exactly one with --experts, "
                                 "or choose a router with --router", param="experts")
        if self.k > 1 and not self.aggregator:
            raise InvalidRequest("k > 1 needs an aggregator (--aggregator vote|synthesis|first)", param="aggregator")
        if self.k == 1 and self.aggregator:
            object.__setattr__(self, "aggregator", None)   # one answer: nothing to aggregate

    def to_dict(self) -> dict:
        return {**asdict(self), "experts": list(self.experts)}

    def with_(self, **changes) -> "RunConfig":
        return replace(self, **changes)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]

    def label(self) -> str:
        """``<dataset>-<router|expert>-k<k>-<aggregator>-<hash8>``: the default folder name."""
        who = self.router or self.experts[0]
        return f"{self.dataset}-{who}-k{self.k}-{self.aggregator or 'none'}-{self.digest()}"


def registry_digest(store, names: tuple[str, ...], generalist: str | None) -> str:
    """A short hash of the records of ``names`` (or every registered expert) and the generalist;
    unknown names are an error naming the registered ones."""
    experts = {e.name: e for e in store.list()}
    missing = [n for n in names if n not in experts]
    if missing:
        raise InvalidRequest(f"no expert named {', '.join(map(repr, missing))}; registered: "
                             f"{', '.join(experts) or 'none'} ('conclave experts list')", param="experts")
    doc = [experts[n].to_dict() for n in (names or sorted(experts))] + [generalist]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:8]


def local_gateway(settings=None, store=None):
    """The gateway the app builds (service.http.app.create_app): same settings, store and backends."""
    from experts_registry import offer_bundled, open_store
    from service.backends import BackendPool
    from service.core.config import load_settings
    from service.pipeline.gateway import Gateway

    settings = settings or load_settings()
    if store is None:
        store = open_store(settings.home, settings.redis_url, settings.redis_prefix)
        offer_bundled(store)
    return Gateway(settings, store, BackendPool(settings))


def open_run_dir(path: Path, cfg: RunConfig):
    """The run folder: new (config written), or the same config again (resume), else InvalidRequest."""
    from .results import RunDir

    rd = RunDir(Path(path))
    rd.write_config(cfg.to_dict())
    return rd


@dataclass
class Item:
    """One pending question: its request, routing decision and the experts to ask."""

    q: Question
    prompt: str
    messages: tuple[dict, ...]
    params: object
    decision: object | None
    experts: list[tuple[Expert, float]]

    def calls(self) -> list[Call]:
        return [Call(e, self.messages, self.params, self.q.id) for e, _ in self.experts]


@dataclass
class Cell:
    """One run: its config and folder, and its routed questions not answered yet."""

    name: str
    cfg: RunConfig
    out: Path
    gateway: object
    pending: dict[str, Item] = field(default_factory=dict)
    total: int = 0
    rd: object = None

    def prepare(self) -> None:
        """Open (or resume) the folder and route the questions it has not answered."""
        self.rd = open_run_dir(self.out, self.cfg)
        questions = load_questions(self.cfg.dataset, self.cfg.subset, self.cfg.limit, self.cfg.seed)
        self.total = len(questions)
        done = set(self.rd.done_ids())
        todo = [q for q in questions if q.id not in done]
        items = asyncio.run(self._route_all(todo))
        self.pending = {item.q.id: item for item in items}

    @property
    def done(self) -> int:
        return self.total - len(self.pending)

    def calls(self) -> list[Call]:
        return [c for item in self.pending.values() for c in item.calls()]

    async def _route_all(self, questions: list[Question]) -> list[Item]:
        return [await self._route(q) for q in questions]

    async def _route(self, q: Question) -> Item:
        from service.core.config import VIRTUAL_AUTO
        from service.core.protocol import ChatRequest, ConclaveOptions

        cfg, gw = self.cfg, self.gateway
        messages = messages_for(q, shots=cfg.shots, cot=cfg.cot)
        options = ConclaveOptions(router=cfg.router, k=cfg.k, aggregator=cfg.aggregator) if cfg.router else None
        req = ChatRequest(model=VIRTUAL_AUTO if cfg.router else cfg.experts[0], messages=messages,
                          max_tokens=cfg.max_tokens, temperature=cfg.temperature, conclave=options)
        routed = await gw.resolve(req, allowed=cfg.experts if cfg.router else ())
        decision = routed.decision
        experts = [(routed.expert, 0.0)]
        if decision is not None:
            experts = [(routed.expert, decision.choices[0].score)]
            if decision.k > 1:   # the gateway's own choice of the k experts (Gateway._aggregate)
                by_name = {e.name: e for e in gw.store.list()}
                experts = [(by_name[c.expert], c.score) for c in decision.choices[:decision.k]
                           if c.expert in by_name]
        return Item(q, req.prompt_text(), tuple(messages), gw.params(req), decision, experts)

    def flush(self, cache, qids: list[str] | None = None) -> list[Call]:
        """Record every pending question whose answers are all in; return the synthesis calls still needed."""
        needed = []
        for qid in list(self.pending) if qids is None else qids:
            item = self.pending.get(qid)
            if item is None:
                continue
            answers = [cache.get(c) for c in item.calls()]
            if any(a is None for a in answers):
                continue
            final, judge, detail = self._final(item, answers, cache)
            if final is None:
                needed.append(judge)
                continue
            self.rd.append(self._record(item, answers, final, judge, detail))
            del self.pending[qid]
        return needed

    def _final(self, item: Item, answers: list[Answer], cache) -> tuple[Answer | None, Call | None, dict]:
        """(the answer the client would get, the synthesis call if one is made, the aggregation detail)."""
        if len(answers) == 1 or self.cfg.k == 1:
            return answers[0], None, {}
        from service.pipeline.fanout import aggregator

        candidates = [Candidate(e.name, a.text, s, error=a.error) for (e, s), a in zip(item.experts, answers)]
        try:
            plan = aggregator(self.cfg.aggregator).plan(item.prompt, candidates)
        except UpstreamError as exc:   # every expert failed: the gateway's 502
            return Answer("", error=exc.message), None, {"aggregator": self.cfg.aggregator}
        if not isinstance(plan, Synthesize):
            return Answer(plan.winner, plan.text), None, plan.detail
        by_name = {e.name: e for e in self.gateway.store.list()}
        judge = self.gateway.aggregator_expert(candidates, by_name)   # the gateway's choice, same code
        call = Call(by_name[judge], tuple(plan.messages), item.params, item.q.id)
        return cache.get(call), call, {**plan.detail, "aggregated_by": judge}

    def _record(self, item: Item, answers: list[Answer], final: Answer, judge: Call | None, detail: dict) -> dict:
        calls = answers + ([final] if judge is not None else [])
        routing = (item.decision.to_dict() if item.decision is not None else
                   {"router": None, "k": 1, "experts": [item.experts[0][0].name], "reason": "asked by name"})
        return {
            **base_record(item.q, final.text),
            "experts": [e.name for e, _ in item.experts],
            "candidates": [_candidate(item.q, a) for a in answers], "error": final.error,
            "tokens": sum(a.tokens for a in calls), "calls": len(calls),
            "latency_s": round(sum(a.latency_s for a in calls), 4),
            "routing": routing, "aggregator": self.cfg.aggregator, "aggregation": detail,
        }

    def summarize(self, stats: dict, wall_s: float, shared_by: int = 1) -> dict:
        """Write the summary; loads and seconds add up over every invocation of the run (resumes)."""
        ks = [r.get("routing", {}).get("k", 1) for r in self.rd.records()]
        totals = _added(_previous_summary(self.out), {**stats, "wall_seconds": round(wall_s, 2)})
        extra = {"config": self.cfg.to_dict(), "name": self.name, **totals,
                 "effective_k": max(ks) if ks else None, "generation_shared_by_cells": shared_by}
        return self.rd.write_summary(extra)


ADDED_UP = ("loads", "unloads", "load_seconds", "generate_seconds", "calls", "wall_seconds")


def _previous_summary(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _added(old: dict, new: dict) -> dict:
    """``new`` with the ADDED_UP counters (and loads per expert) of ``old`` added in."""
    out = dict(new)
    for key in ADDED_UP:
        if isinstance(old.get(key), (int, float)):
            out[key] = round(old[key] + new.get(key, 0), 4)
    by = dict(old.get("loads_by_expert") or {})
    for name, n in (new.get("loads_by_expert") or {}).items():
        by[name] = by.get(name, 0) + n
    out["loads_by_expert"] = by
    return out


def base_record(q: Question, final_text: str) -> dict:
    """The question's labels and how the final answer scores (unparsable: wrong, counted apart)."""
    letter, correct = score(q, final_text)
    return {"id": q.id, "dataset": q.dataset, "subject": q.subject, "category": q.category, "gold": q.answer,
            "final_answer": letter, "correct": correct, "parsed": letter is not None, "final_text": final_text}


def _candidate(q: Question, a: Answer) -> dict:
    letter, _ = score(q, a.text)
    return {"expert": a.expert, "answer": letter, "text": a.text, "tokens": a.tokens,
            "latency_s": a.latency_s, "error": a.error}


def run_cells(cells: list[Cell], gen: Generator, progress=None) -> list[dict]:
    """Route every cell, generate the union of their calls once, aggregate; return their summaries.
    Raises :class:`~benchmarks.generate.Interrupted` on Ctrl-C (finished questions are recorded)."""
    t0 = time.perf_counter()
    for cell in cells:
        cell.prepare()
    by_qid: dict[str, list[Cell]] = {}
    for cell in cells:
        for qid in cell.pending:
            by_qid.setdefault(qid, []).append(cell)
    calls = [c for cell in cells for c in cell.calls()]
    if progress is not None:
        progress.reset(total=len(gen.missing(calls)))

    def done(call: Call) -> None:
        if progress is not None:
            progress.update(1)
        for cell in by_qid.get(call.qid, []):
            cell.flush(gen.cache, [call.qid])

    asked: set[str] = set()
    try:
        while calls and not {c.key for c in calls} <= asked:   # a call that gave no answer: not retried here
            asked |= {c.key for c in calls}
            gen.run(calls, done)
            calls = [c for cell in cells for c in cell.flush(gen.cache)]   # synthesis calls, batched
            if progress is not None and calls:
                progress.reset(total=len(gen.missing(calls)))
    except Interrupted:
        raise Interrupted(sum(c.done for c in cells), sum(c.total for c in cells)) from None
    wall = time.perf_counter() - t0
    return [cell.summarize(gen.stats, wall, len(cells)) for cell in cells]
