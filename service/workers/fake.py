"""A scripted worker for tests of the scheduler (never used in production).

It sleeps ``load_s`` per load and ``gen_s`` per job, echoes the last user turn word by word (one
Delta per word, ``chunk_s`` apart; a test may hand the words out one at a time through ``step``, a
semaphore), stops when the job is cancelled, and records every load, unload and batch.  Experts whose
model is ``fake:fail-load`` fail to load.
"""

from __future__ import annotations

import logging
import threading
import time

from experts_registry.errors import ExpertUnavailable
from experts_registry.model import Expert

from ..core.backend import Delta, usage_dict
from ..core.prompting import text_of
from .base import Job, Worker

log = logging.getLogger("conclave.worker")


class FakeWorker(Worker):
    def __init__(self, max_models: int = 1, memory_mb: int | None = None, name: str = "fake-0",
                 load_s: float = 0.0, gen_s: float = 0.0, chunk_s: float = 0.0):
        super().__init__(max_models, memory_mb, name)
        self.load_s, self.gen_s, self.chunk_s = load_s, gen_s, chunk_s
        self.step: threading.Semaphore | None = None   # when set, each word after the first waits for a release
        self.events: list[tuple] = []
        self.gate = threading.Event()  # tests may hold generation until they set it
        self.gate.set()

    def load(self, expert: Expert) -> float:
        if expert.model.endswith("fail-load"):
            raise ExpertUnavailable(f"expert {expert.name!r} failed to load: scripted", expert=expert.name)
        assert len(self.hosted) < self.max_models, "the scheduler must make room before loading"
        time.sleep(self.load_s)
        self.hosted[expert.name] = expert
        self.events.append(("load", expert.name))
        log.info("fake worker %s loaded %s", self.name, expert.name)
        return self.load_s

    def unload(self, name: str) -> float:
        self.hosted.pop(name)
        self.events.append(("unload", name))
        return 0.0

    def generate(self, expert: Expert, batch: list[Job]) -> None:
        assert expert.name in self.hosted, "generate on an expert that is not loaded"
        self.gate.wait()
        self.events.append(("batch", expert.name, len(batch)))
        for job in batch:
            if job.cancel.is_set():
                continue
            time.sleep(self.gen_s)
            last = next((text_of(m) for m in reversed(job.messages) if m["role"] == "user"), "")
            self._words(job, f"{expert.name}: {last}".split(" "))

    def _words(self, job: Job, words: list[str]) -> None:
        for i, word in enumerate(words):
            if i:
                if self.step is not None:
                    self.step.acquire()
                time.sleep(self.chunk_s)
            if job.cancel.is_set():   # the client left (or another attempt answered): stop mid-answer
                self.events.append(("stopped", job.id, i))
                return
            job.emit(Delta(word if i == 0 else " " + word))
        job.emit(Delta("", "stop", usage_dict(1, len(words))))

    def loads(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == "load"]
