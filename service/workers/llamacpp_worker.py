"""A worker that hosts GGUF experts in-process through llama-cpp-python.

llama-cpp-python runs one sequence at a time on a ``Llama`` object, so a batch
runs its jobs back to back on the loaded model; the win of batching here is
loading each model once for many requests.  ``unload`` calls ``Llama.close()``
(the model's memory is freed).  Each loaded expert owns its ``Llama`` object:
prompt variants of one GGUF are separate loads.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from experts_registry.bundled import resolve_gguf
from experts_registry.errors import ConclaveError, ContextLengthExceeded, ExpertUnavailable, UpstreamError
from experts_registry.model import Expert

from ..core.backend import Delta, usage_dict
from ..core.prompting import chat_messages, completion_prompt
from .base import Job, Worker
from .llamacpp_raw import generate_raw
from .llamacpp_fields import options
from .llamacpp_stream import run

log = logging.getLogger("conclave.llamacpp")


@dataclass
class Loaded:
    llm: object
    formatter: object | None


class LlamaCppWorker(Worker):
    serves = ("llamacpp",)

    def __init__(self, home: Path, max_models: int = 1, memory_mb: int | None = None,
                 threads: int | None = None, name: str = "llamacpp-0"):
        super().__init__(max_models, memory_mb, name)
        self.home = Path(home)
        self.threads = threads
        self.models: dict[str, Loaded] = {}

    def load(self, expert: Expert) -> float:
        t0 = time.perf_counter()
        if expert.name not in self.models:
            self.models[expert.name] = _load(expert, self.home, self.threads)
            self.hosted[expert.name] = expert
            log.info("%s loaded %s in %.2f s", self.name, expert.name, time.perf_counter() - t0)
        return time.perf_counter() - t0

    def unload(self, name: str) -> float:
        t0 = time.perf_counter()
        model = self.models.pop(name, None)
        self.hosted.pop(name, None)
        if model is not None:
            model.llm.close()
        return time.perf_counter() - t0

    def generate(self, expert: Expert, batch: list[Job]) -> None:
        model = self.models.get(expert.name)
        if model is None:
            raise ExpertUnavailable(f"expert {expert.name!r} is not loaded on {self.name}", expert=expert.name)
        for job in batch:
            if job.cancel.is_set():
                continue
            try:
                _generate(model, expert, job)
            except ConclaveError as exc:   # the expert's failure, or the caller's (a prompt too long)
                job.fail(exc)
            except Exception as exc:  # reported to the waiting request, never lost
                log.warning("generation for %s failed: %s", expert.name, exc)
                job.fail(UpstreamError(f"expert {expert.name!r} failed: {exc}", expert=expert.name))


def _load(expert: Expert, home: Path, threads: int | None) -> Loaded:
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ExpertUnavailable("llama-cpp-python is not installed: run 'bash scripts/install.sh'",
                                expert=expert.name) from None
    path = resolve_gguf(expert.model, home)
    try:
        llm = Llama(model_path=str(path), n_ctx=expert.context_length, n_threads=threads or os.cpu_count(),
                    verbose=False)
    except Exception as exc:  # llama.cpp raises ValueError/RuntimeError on bad files
        raise ExpertUnavailable(f"expert {expert.name!r} failed to load {path.name}: {exc}",
                                expert=expert.name) from None
    return Loaded(llm, _chat_formatter(llm) if expert.prompt_style == "chat" else None)


def _chat_formatter(llm):
    """The GGUF's own chat template, rendered by llama-cpp-python's Jinja formatter."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    def text(token_id: int) -> str:
        return llm._model.token_get_text(token_id) if token_id != -1 else ""
    return Jinja2ChatFormatter(template=template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))


def _render(model: Loaded, expert: Expert, messages: list[dict]) -> tuple[str, list[str]]:
    if expert.prompt_style == "completion":
        return completion_prompt(expert, messages), list(expert.stop)
    msgs = chat_messages(expert, messages)
    if model.formatter is None:
        raise ExpertUnavailable(f"expert {expert.name!r} is a chat expert but its GGUF has no chat template: "
                                "register it with --prompt-style completion", expert=expert.name)
    rendered = model.formatter(messages=msgs)
    stop = rendered.stop if isinstance(rendered.stop, list) else ([rendered.stop] if rendered.stop else [])
    return rendered.prompt, stop + list(expert.stop)


def check_context(expert: Expert, prompt_tokens: int, n_ctx: int) -> None:
    """Refuse (400, before generating) a prompt that leaves no room for one token of answer."""
    if prompt_tokens >= n_ctx:
        raise ContextLengthExceeded(
            f"this model's maximum context length is {n_ctx} tokens, but your messages came to {prompt_tokens} "
            f"tokens (expert {expert.name!r}): shorten the messages or pick an expert with a longer context",
            expert=expert.name)


def _generate(model: Loaded, expert: Expert, job: Job) -> None:
    if job.params.raw:   # /v1/completions: the prompt verbatim, echo and logprobs (llamacpp_raw.py)
        return generate_raw(model.llm, expert, job)
    prompt, stop = _render(model, expert, job.messages)
    llm, p = model.llm, job.params
    opts = options(llm, expert, p)   # 400 for a field llama.cpp cannot honour, before any work
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    check_context(expert, len(tokens), llm.n_ctx())
    if opts.grammar is not None:   # JSON mode: the grammar ends the answer; the template's stops ("\n\n") could cut it
        stop = []
    done = run(llm, tokens, stop + list(p.stop), p, opts, job.emit, job.cancel.is_set)
    if done is not None:
        finish, completion_tokens = done
        job.emit(Delta("", finish, usage_dict(len(tokens), completion_tokens)))
