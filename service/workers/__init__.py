"""Workers: processes or threads that host expert models and run batches of jobs on them.

``WORKERS`` maps a backend kind to a factory ``(settings, name) -> Worker``.  Heavy
imports (llama_cpp, vllm) happen inside the factories, never at import time.  May import core only (never scheduler, backends or above).
"""

from __future__ import annotations

from typing import Callable

from ..core.config import Settings
from .base import END, Job, Worker


def _llamacpp(settings: Settings, name: str = "llamacpp-0") -> Worker:
    from .llamacpp_worker import LlamaCppWorker

    return LlamaCppWorker(settings.home, max_models=settings.max_loaded_models,
                          memory_mb=settings.worker_memory_mb, threads=settings.llama_threads, name=name)


def _vllm(settings: Settings, name: str = "vllm-0") -> Worker:
    from .prefetch import host_free_mb
    from .vllm_worker import VllmWorker   # imports no vllm: that happens on the first load

    host = settings.vllm_host_memory_mb      # None: half of the memory available at start
    return VllmWorker(settings.home, max_models=settings.max_loaded_models, memory_mb=settings.worker_memory_mb,
                      name=name, host_memory_mb=host if host is not None else 0.5 * (host_free_mb() or 0.0),
                      max_sleeping=settings.vllm_max_sleeping)


WORKERS: dict[str, Callable[..., Worker]] = {"llamacpp": _llamacpp, "vllm": _vllm}

__all__ = ["END", "Job", "WORKERS", "Worker"]
