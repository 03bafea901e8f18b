"""Start the real gateway (`conclave serve`) in a subprocess on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

CONCLAVE = str(Path(sys.executable).with_name("conclave"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fake_upstream() -> tuple[subprocess.Popen, str]:
    """The scripted OpenAI-compatible upstream (tests/fake_upstream.py) on a free port, once it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_upstream", str(port)])
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return proc, base


def start_gateway(home: Path, log: Path, serve_args: tuple[str, ...] = (),
                  **env_overrides) -> tuple[subprocess.Popen, str]:
    """`conclave serve` (plus ``serve_args``) on a free port, ready to answer: (process, base URL)."""
    port = free_port()
    env = {**os.environ, "CONCLAVE_HOME": str(home), "CONCLAVE_LLAMA_THREADS": "2", **env_overrides}
    with open(log, "w") as out:
        proc = subprocess.Popen([CONCLAVE, "serve", "--port", str(port), "--log-level", "warning", *serve_args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log)
    except BaseException:
        proc.kill()
        raise
    return proc, base


@contextmanager
def running_gateway(home: Path, log: Path, serve_args: tuple[str, ...] = (), **env_overrides):
    proc, base = start_gateway(home, log, serve_args, **env_overrides)
    try:
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_ready(base: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gateway not ready after {timeout} s:\n{log.read_text()}")
