"""Generation for benchmark runs: every expert call made once, kept as soon as it finishes.

Experts on a scheduled local backend (llamacpp, vllm) run on one worker with the offline batch
schedule (:func:`service.scheduler.offline.run_offline`: jobs grouped by expert, each expert
loaded once); other experts (litellm) go through ``Gateway.call``, a bounded number at a time.
Every finished call becomes one fsynced JSON line of an :class:`AnswerCache`, keyed by a hash of
the expert record, the messages and the generation parameters, so a rerun - or another cell of
a sweep - never makes the same call twice.

Ctrl-C during generation sets a stop flag and cancels the jobs (the worker stops at the next
token); the call in progress is dropped, finished calls are kept, :class:`Interrupted` is raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from experts_registry.errors import ConclaveError
from experts_registry.model import Expert
from service.backends import GenParams, collect

OFFLINE_KINDS = ("llamacpp", "vllm")


class Interrupted(Exception):
    """Ctrl-C: finished work is on disk, the rest is not started; ``done`` of ``total`` questions."""

    def __init__(self, done: int = 0, total: int = 0):
        super().__init__(f"interrupted: {done}/{total} done")
        self.done, self.total = done, total


@dataclass(frozen=True)
class Call:
    """One expert asked one thing; ``qid`` says which question it serves (for the record only)."""

    expert: Expert
    messages: tuple[dict, ...]
    params: GenParams
    qid: str

    @property
    def key(self) -> str:
        params = {k: v for k, v in asdict(self.params).items() if k != "stream"}   # transport, not content
        doc = [self.expert.to_dict(), list(self.messages), params]
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Answer:
    expert: str
    text: str = ""
    error: str | None = None
    usage: dict = field(default_factory=dict)
    finish: str | None = None
    latency_s: float = 0.0

    @property
    def tokens(self) -> int:
        return int(self.usage.get("total_tokens", 0))


class AnswerCache:
    """``key -> Answer``, persisted as an append-only JSONL file (a torn last line is ignored)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    doc = json.loads(line)
                    self.answers[doc.pop("key")] = Answer(**{k: doc[k] for k in Answer.__dataclass_fields__})
                except (ValueError, KeyError, TypeError):
                    continue

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def get(self, call: Call) -> Answer | None:
        return self.answers.get(call.key)

    def put(self, call: Call, answer: Answer) -> None:
        line = json.dumps({"key": call.key, "qid": call.qid, **asdict(answer)}, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.answers[call.key] = answer


class StopFlag:
    """Set by Ctrl-C; cancels the registered jobs and tasks.  A second Ctrl-C raises at once."""

    def __init__(self):
        self.event = threading.Event()
        self.cancels: list[Callable[[], None]] = []

    def __bool__(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()
        for cancel in list(self.cancels):
            cancel()

    @contextmanager
    def catching_sigint(self) -> Iterator[None]:
        """While inside, the first SIGINT sets the flag instead of raising KeyboardInterrupt."""
        def handler(_sig, _frame):
            if self.event.is_set():
                raise KeyboardInterrupt
            self.set()

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:   # not the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class _Timed:
    """A worker seen through run_offline; remembers when each batch started (per-call latency)."""

    def __init__(self, worker):
        self.worker = worker
        self.mark = time.perf_counter()

    def __getattr__(self, name):
        return getattr(self.worker, name)

    def generate(self, expert, batch) -> None:
        self.mark = time.perf_counter()
        self.worker.generate(expert, batch)

    def lap(self) -> float:
        now = time.perf_counter()
        seconds, self.mark = now - self.mark, now
        return seconds


class Generator:
    """Answers calls not in the cache.  ``on_done(call)`` runs after each answer is persisted."""

    def __init__(self, gateway, cache: AnswerCache, workers: dict | None = None, concurrency: int = 4,
                 stop: StopFlag | None = None):
        from service.workers import WORKERS

        self.gateway = gateway
        self.cache = cache
        self.workers = WORKERS if workers is None else workers
        self.concurrency = max(1, concurrency)
        self.stop = stop or StopFlag()
        self.stats = {"loads": 0, "unloads": 0, "load_seconds": 0.0, "generate_seconds": 0.0, "calls": 0,
                      "loads_by_expert": {}}

    def missing(self, calls: list[Call]) -> list[Call]:
        """The calls to make: not cached, one per key."""
        todo: dict[str, Call] = {}
        for c in calls:
            if c.key not in self.cache and c.key not in todo:
                todo[c.key] = c
        return list(todo.values())

    def run(self, calls: list[Call], on_done: Callable[[Call], None] = lambda c: None) -> None:
        todo = self.missing(calls)
        offline = [c for c in todo if self._offline(c.expert)]
        online = [c for c in todo if not self._offline(c.expert)]
        for kind in sorted({c.expert.backend for c in offline}):
            if self.stop:
                break
            self._run_offline(kind, [c for c in offline if c.expert.backend == kind], on_done)
        if online and not self.stop:
            self._run_online(online, on_done)
        if self.stop:
            raise Interrupted()

    def _offline(self, expert: Expert) -> bool:
        return (expert.backend in OFFLINE_KINDS and expert.backend in self.workers
                and self.gateway.settings.sched_queue == "local")

    def _keep(self, call: Call, answer: Answer, on_done) -> None:
        self.cache.put(call, answer)
        self.stats["calls"] += 1
        on_done(call)

    def _run_offline(self, kind: str, calls: list[Call], on_done) -> None:
        from service.scheduler.offline import run_offline
        from service.workers.base import Job

        worker = _Timed(self.workers[kind](self.gateway.settings, f"bench-{kind}"))
        pairs = []
        for c in calls:
            job = Job(c.expert.name, [dict(m) for m in c.messages], c.params, self._sink(c, worker, on_done))
            pairs.append((c.expert, job))
        self.stop.cancels.append(lambda: [job.cancel.set() for _, job in pairs])
        try:
            with self.stop.catching_sigint():
                snap = run_offline(worker, pairs, max_batch=self.gateway.settings.sched_max_batch)
        finally:
            self.stop.cancels.pop()
        self._add_stats(snap)

    def _sink(self, call: Call, timer: _Timed, on_done) -> Callable[[object], None]:
        """Keep the answer at its last Delta (the one with finish_reason) or its error: run_offline
        closes the jobs only after the expert's whole group, too late for Ctrl-C."""
        answer, parts = Answer(call.expert.name), []

        def finish() -> None:
            answer.text, answer.latency_s = "".join(parts), round(timer.lap(), 4)
            self._keep(call, answer, on_done)

        def sink(item: object) -> None:
            if answer.finish is not None or answer.error is not None:
                return                      # kept already; END (or a late error) changes nothing
            if isinstance(item, BaseException):
                answer.error = getattr(item, "message", None) or str(item)
                finish()
            elif hasattr(item, "text"):     # a Delta; END (cancelled, never run) is not an answer
                parts.append(item.text)
                answer.usage = item.usage or answer.usage
                if item.finish_reason:
                    answer.finish = item.finish_reason
                    finish()
        return sink

    def _add_stats(self, snap: dict) -> None:
        for name in ("loads", "unloads", "load_seconds", "generate_seconds"):
            self.stats[name] = round(self.stats[name] + snap[name], 4)
        by = self.stats["loads_by_expert"]
        for name, n in snap["loads_by_expert"].items():
            by[name] = by.get(name, 0) + n

    def _run_online(self, calls: list[Call], on_done) -> None:
        t0 = time.perf_counter()
        with self.stop.catching_sigint():
            try:
                asyncio.run(self._online(calls, on_done))
            except asyncio.CancelledError:
                pass
        self.stats["generate_seconds"] = round(self.stats["generate_seconds"] + time.perf_counter() - t0, 4)

    async def _online(self, calls: list[Call], on_done) -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        self.stop.cancels.append(lambda: loop.call_soon_threadsafe(task.cancel))
        gate = asyncio.Semaphore(self.concurrency)

        async def one(call: Call) -> None:
            async with gate:
                if self.stop:
                    return
                t0, answer = time.perf_counter(), Answer(call.expert.name)
                try:
                    gen = await collect(self.gateway.call(call.expert, [dict(m) for m in call.messages],
                                                          call.params))
                    answer.text, answer.usage, answer.finish = gen.text, gen.usage, gen.finish_reason
                except ConclaveError as exc:
                    answer.error = exc.message
                answer.latency_s = round(time.perf_counter() - t0, 4)
                self._keep(call, answer, on_done)

        try:
            await asyncio.gather(*(one(c) for c in calls))
        finally:
            self.stop.cancels.pop()
            await self.gateway.backends.close()
