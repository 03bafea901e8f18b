"""Prefetch: while a batch runs, move the expert the policy will pick next up one tier.

    plan_prefetch(tier, weights_mb, host_free_mb, ...)   which move, if any (pure)
    read_files(folder)                                  read a model folder once (fills the page cache)
    Prefetcher                                          one background thread per expert at most

Moves: ``disk -> page_cache`` reads the expert's weight files with a background thread (only when
the host has that much memory free, else the read would evict what it is meant to keep);
``sleep2 -> sleep1`` wakes a level-2 sleeper's weights, reloads them and puts it to sleep at level 1
(GPU only, and only when the worker's GPU budget has room for the weights meanwhile and the pinned
host memory for level-1 sleepers has room for them after).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("conclave.vllm")
CHUNK = 8 * 1024 * 1024


def plan_prefetch(tier: str, weights_mb: float, host_free_mb: float | None, *, gpu_room_mb: float = 0.0,
                  pinned_room_mb: float = 0.0) -> str | None:
    """The tier a prefetch moves an expert to (None: stay)."""
    if tier == "disk" and host_free_mb is not None and weights_mb <= 0.5 * host_free_mb:
        return "page_cache"
    if tier == "sleep2" and weights_mb <= gpu_room_mb and weights_mb <= pinned_room_mb:
        return "sleep1"
    return None


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin", ".gguf") and p.is_file())


def weights_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in weight_files(folder)) / (1024 * 1024)


def read_files(folder: Path, stop: threading.Event | None = None) -> int:
    """Read every weight file of ``folder`` once (the kernel keeps it in the page cache); bytes read."""
    n = 0
    for path in weight_files(folder):
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                n += len(chunk)
                if stop is not None and stop.is_set():
                    return n
    return n


def host_free_mb() -> float | None:
    """MemAvailable from /proc/meminfo (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (ValueError, OSError):
        return None


class Prefetcher:
    """At most one background move per expert at a time; ``join`` waits for them (tests, shutdown)."""

    def __init__(self):
        self.threads: dict[str, threading.Thread] = {}
        self.stop = threading.Event()

    def start(self, expert: str, move, on_done) -> bool:
        old = self.threads.get(expert)
        if old is not None and old.is_alive():
            return False

        def run() -> None:
            t0 = time.perf_counter()
            try:
                move()
            except Exception as exc:  # a failed prefetch only costs the time it took
                log.warning("prefetch of %s failed: %s", expert, exc)
                return
            on_done(time.perf_counter() - t0)

        t = self.threads[expert] = threading.Thread(target=run, name=f"prefetch-{expert}", daemon=True)
        t.start()
        return True

    def wait(self, expert: str) -> None:
        t = self.threads.get(expert)
        if t is not None:
            t.join()

    def join(self, timeout: float | None = None) -> None:
        for t in list(self.threads.values()):
            t.join(timeout)
