"""In-process GGUF experts through llama-cpp-python.

Generation is blocking, so it runs on worker threads; each loaded model has a
lock so two requests never drive one ``Llama`` object at once.  Tokens travel
back to the event loop through an asyncio queue; a cancel flag stops
generation at the next token when the client goes away or times out.
At most ``max_loaded`` models stay loaded (least recently used is unloaded).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from experts_registry.bundled import resolve_gguf
from experts_registry.errors import ExpertUnavailable, UpstreamError
from experts_registry.model import Expert

from ..prompting import chat_messages, completion_prompt
from .base import Delta, GenParams, usage_dict

log = logging.getLogger("conclave.llamacpp")
_END = object()


@dataclass
class Loaded:
    key: tuple
    llm: object
    formatter: object | None
    lock: threading.Lock
    load_seconds: float


def _load(expert: Expert, home: Path, threads: int | None) -> Loaded:
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ExpertUnavailable("llama-cpp-python is not installed: run 'bash scripts/install.sh'",
                                expert=expert.name) from None
    path = resolve_gguf(expert.model, home)
    t0 = time.perf_counter()
    try:
        llm = Llama(model_path=str(path), n_ctx=expert.context_length, n_threads=threads or os.cpu_count(),
                    verbose=False)
    except Exception as exc:  # llama.cpp raises ValueError/RuntimeError on bad files
        raise ExpertUnavailable(f"expert {expert.name!r} failed to load {path.name}: {exc}",
                                expert=expert.name) from None
    formatter = _chat_formatter(llm) if expert.prompt_style == "chat" else None
    return Loaded(_key(expert), llm, formatter, threading.Lock(), time.perf_counter() - t0)


def _chat_formatter(llm):
    """The GGUF's own chat template, rendered by llama-cpp-python's Jinja formatter."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    def text(token_id: int) -> str:
        return llm._model.token_get_text(token_id) if token_id != -1 else ""
    return Jinja2ChatFormatter(template=template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))


def _key(expert: Expert) -> tuple:
    return (expert.model, expert.context_length)


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


class LlamaCppBackend:
    def __init__(self, home: Path, max_loaded: int = 2, threads: int | None = None):
        self.home = Path(home)
        self.max_loaded = max(1, max_loaded)
        self.threads = threads
        self.models: OrderedDict[tuple, Loaded] = OrderedDict()
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="llamacpp")
        self._load_lock = asyncio.Lock()
        self.loads = 0

    async def _get(self, expert: Expert) -> Loaded:
        loop = asyncio.get_running_loop()
        async with self._load_lock:
            key = _key(expert)
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            while len(self.models) >= self.max_loaded:
                _, old = self.models.popitem(last=False)
                await loop.run_in_executor(self.executor, _unload, old)
            model = await loop.run_in_executor(self.executor, _load, expert, self.home, self.threads)
            self.loads += 1
            log.info("loaded %s in %.2f s", expert.name, model.load_seconds)
            self.models[key] = model
            return model

    async def stream(self, expert: Expert, messages: list[dict], params: GenParams):
        model = await self._get(expert)
        prompt, stop = _render(model, expert, messages)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        work = _Generation(model, prompt, stop + list(params.stop), params, loop, queue, cancel)
        loop.run_in_executor(self.executor, work.run)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise UpstreamError(f"expert {expert.name!r} failed: {item}", expert=expert.name)
                yield item
        finally:
            cancel.set()

    async def close(self) -> None:
        for model in self.models.values():
            _unload(model)
        self.models.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _unload(model: Loaded) -> None:
    with model.lock:  # waits for a generation in progress to end
        model.llm.close()


@dataclass
class _Generation:
    model: Loaded
    prompt: str
    stop: list[str]
    params: GenParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    cancel: threading.Event

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            self.cancel.set()

    def run(self) -> None:
        try:
            with self.model.lock:
                if not self.cancel.is_set():
                    self._generate()
        except Exception as exc:  # reported to the waiting request, never lost
            log.warning("generation failed: %s", exc)
            self._put(exc)
        finally:
            self._put(_END)

    def _generate(self) -> None:
        llm, p = self.model.llm, self.params
        prompt_tokens = len(llm.tokenize(self.prompt.encode(), add_bos=True, special=True))
        kwargs = {"max_tokens": p.max_tokens, "stop": self.stop or None, "stream": True}
        if p.temperature is not None:
            kwargs["temperature"] = p.temperature
        if p.top_p is not None:
            kwargs["top_p"] = p.top_p
        if p.seed is not None:
            kwargs["seed"] = p.seed
        parts, finish = [], "stop"
        for chunk in llm.create_completion(self.prompt, **kwargs):
            if self.cancel.is_set():
                return
            choice = chunk["choices"][0]
            if choice.get("text"):
                parts.append(choice["text"])
                self._put(Delta(choice["text"]))
            finish = choice.get("finish_reason") or finish
        text = "".join(parts)
        completion_tokens = len(llm.tokenize(text.encode(), add_bos=False, special=False)) if text else 0
        self._put(Delta("", finish, usage_dict(prompt_tokens, completion_tokens)))
