"""Issue 19, Redis faults: a private Redis (never the shared one on 6379) killed and restarted under a
trickle of requests, with a real `conclave serve` on the Redis queue and a real `conclave worker`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from .servers import free_port, start_gateway

pytestmark = pytest.mark.real
CHAT = "/v1/chat/completions"
BODY = {"model": "smollm2", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def start_redis(folder, port: int, aof: bool) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes" if aof else "no", "--appendfsync", "always",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    for _ in range(200):
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return proc
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("private redis-server did not start")


@pytest.fixture
def no_volatile(monkeypatch):
    if not any(os.access(os.path.join(p, "redis-server"), os.X_OK) for p in os.environ["PATH"].split(":")):
        pytest.skip("redis-server is not installed")
    monkeypatch.delenv("CONCLAVE_ALLOW_VOLATILE_REDIS", raising=False)


def cli(home, url, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONCLAVE_HOME": str(home), "CONCLAVE_REDIS_URL": url}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_a_redis_that_keeps_nothing_on_disk_is_refused_as_the_registry(no_volatile, tmp_path):
    port = free_port()
    proc = start_redis(tmp_path / "volatile", port, aof=False)
    try:
        out = cli(tmp_path / "h", f"redis://127.0.0.1:{port}/0", "serve", "--port", str(free_port()))
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "appendonly yes" in out.stderr and "--allow-volatile-redis" in out.stderr
    finally:
        proc.kill()
        proc.wait()


def test_redis_killed_and_restarted_under_a_trickle_of_requests(no_volatile, tmp_path):
    port, folder = free_port(), tmp_path / "aof"
    url = f"redis://127.0.0.1:{port}/0"
    procs = [start_redis(folder, port, aof=True)]
    try:
        secret = cli(tmp_path / "h", url, "keys", "create", "trickle").stdout.split()[-1]
        auth = {"Authorization": f"Bearer {secret}"}
        env = {"CONCLAVE_REDIS_URL": url, "CONCLAVE_SCHED_QUEUE": "redis", "CONCLAVE_EXPERT_TIMEOUT": "60"}
        gateway, base = start_gateway(tmp_path / "h", tmp_path / "gateway.log", **env)
        procs.append(gateway)
        wenv = {**os.environ, "CONCLAVE_HOME": str(tmp_path / "h"), "CONCLAVE_REDIS_URL": url,
                "CONCLAVE_FAKE_GEN_S": "0.05"}
        log = open(tmp_path / "worker.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--kind", "fake", "--name",
                                       "w1", "--reclaim-ms", "1000"], env=wenv, stdout=log, stderr=log))

        def ask() -> httpx.Response:
            return httpx.post(base + CHAT, json=BODY, headers=auth, timeout=90)

        assert [ask().status_code for _ in range(3)] == [200, 200, 200]
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        during = [ask() for _ in range(3)]
        for r in during:
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1 and "Redis" in r.json()["error"]["message"]
        ready = httpx.get(base + "/health/readiness", timeout=30)
        assert ready.status_code == 503 and any("Redis" in x or "store" in x for x in ready.json()["reasons"])
        procs[0] = start_redis(folder, port, aof=True)   # same data folder: AOF replayed
        after = [ask() for _ in range(5)]
        assert [r.status_code for r in after] == [200] * 5, [r.text for r in after]
        assert httpx.get(base + "/health/readiness", timeout=30).status_code == 200
        assert httpx.get(base + "/v1/models/smollm2", headers=auth).status_code == 200   # nothing lost
        assert gateway.poll() is None and procs[2].poll() is None      # no Conclave process restarted
        log.close()
        worker_log = (tmp_path / "worker.log").read_text()
        assert "Traceback" not in worker_log
        assert worker_log.count("Redis does not answer") == 1 and worker_log.count("Redis is back") == 1
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()
