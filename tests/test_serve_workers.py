"""conclave serve --workers N: what several processes cannot share is refused; /metrics counts them all."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import click
import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from experts_registry import offer_bundled, open_store
from experts_registry.model import Expert
from service.cli import main
from service.cli.serve import refuse_unshared, shared_metrics

from .conftest import REDIS_URL
from .servers import CONCLAVE, running_gateway, start_fake_upstream

CHAT = "/v1/chat/completions"


def _settings(**kw):
    return SimpleNamespace(**{"redis_url": "redis://127.0.0.1:6379/0", "sched_queue": "local", **kw})


@pytest.mark.timeout(120)
def test_several_workers_without_redis_are_refused_by_the_cli():
    result = CliRunner().invoke(main, ["serve", "--workers", "2", "--port", "1"])
    assert result.exit_code == 1
    assert "--workers 2 needs Redis (store.redis_url or CONCLAVE_REDIS_URL)" in result.output
    assert "a key gets 2 times its limit" in result.output


def test_local_experts_need_the_redis_queue_and_vllm_ones_one_process():
    local = [Expert(name="smol", backend="llamacpp", model="bundled:smollm2"),
             Expert(name="remote", backend="litellm", model="openai/x", api_base="http://127.0.0.1:9/v1")]
    with pytest.raises(click.ClickException, match="local experts smol: set CONCLAVE_SCHED_QUEUE=redis "
                                                   r"\(scheduler.queue: redis\) and run 'conclave worker'"):
        refuse_unshared(_settings(), local, 3)
    refuse_unshared(_settings(sched_queue="redis"), local, 3)   # the workers host them: accepted
    refuse_unshared(_settings(), local[1:], 3)                   # remote experts only: accepted
    vllm = [Expert(name="smol-vllm", backend="vllm", model="bundled:smollm2")]
    with pytest.raises(click.ClickException, match="vLLM experts smol-vllm run inside each server process"):
        refuse_unshared(_settings(sched_queue="redis"), vllm, 2)
    with pytest.raises(click.ClickException, match="needs Redis"):
        refuse_unshared(_settings(redis_url=None, sched_queue="local"), local[1:], 2)


def test_a_process_of_several_loads_no_model():
    from experts_registry.errors import ExpertUnavailable
    from service.backends import BackendPool, shared_backends
    from service.core.config import load_settings

    local = load_settings()
    pool = BackendPool(local, shared_backends(local))
    for kind, fix in (("llamacpp", "set CONCLAVE_SCHED_QUEUE=redis"), ("vllm", "with --workers 1")):
        with pytest.raises(ExpertUnavailable, match=f"{kind} experts are not loaded by a gateway of several "
                                                    f"processes .*{fix}"):
            pool.get(kind)
    queued = local.with_(redis_url="redis://127.0.0.1:6379/15", sched_queue="redis")
    assert type(BackendPool(queued, shared_backends(queued)).get("llamacpp")).__name__ == "RedisFront"


def test_the_metrics_folder_is_fresh_and_removed(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with shared_metrics(1) as folder:
        assert folder is None
    with shared_metrics(2) as folder:
        assert folder.is_dir() and list(folder.iterdir()) == []
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder)   # what the spawned processes read
    assert not folder.exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"old run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    with shared_metrics(2) as folder:
        assert folder == given and list(given.iterdir()) == []   # an earlier run never adds to this one
    assert given.is_dir()   # the operator's folder stays


def _per_process(folder) -> dict[str, float]:
    """Chat requests counted by each server process (its counter_PID.db file)."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        counts[path.stem.split("_")[1]] = sum(
            value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
            if json.loads(key)[1] == "conclave_requests_total" and json.loads(key)[2].get("route") == CHAT)
    return counts


def _scraped(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "conclave_requests"
               for s in f.samples if s.name == "conclave_requests_total" and s.labels["route"] == CHAT)


def _ask(base: str) -> int:   # a new connection each time: any process may accept it
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(base + CHAT, json=body, timeout=30).status_code


@pytest.mark.real
def test_two_workers_serve_and_metrics_counts_both(tmp_path, redis_prefix):
    upstream, base_up = start_fake_upstream()
    home, prom = tmp_path / "home", tmp_path / "prom"
    prom.mkdir()
    store = open_store(home, REDIS_URL, redis_prefix)
    offer_bundled(store)   # what a first start would register; then only a remote expert is left
    for name in ("smollm2", "gemma-3-270m"):
        store.remove(name)
    store.add(Expert(name="alpha", backend="litellm", model="openai/alpha", api_base=base_up + "/v1"))
    config = tmp_path / "conclave.yaml"   # the settings reach uvicorn's processes through --config
    config.write_text(f"store: {{redis_url: os.environ/TEST_REDIS, redis_prefix: '{redis_prefix}'}}\n"
                      "router: {generalist: alpha}\nlimits: {max_tokens_cap: 100}\nserver: {workers: 2}\n")
    env = {"TEST_REDIS": REDIS_URL, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    sent, statuses = 0, []
    try:
        with running_gateway(home, tmp_path / "server.log", ("--config", str(config)), **env) as gw, \
                ThreadPoolExecutor(8) as pool:
            over = httpx.post(gw + CHAT, json={"model": "alpha", "max_tokens": 200,
                                               "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
            assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"   # the file's cap
            store.add(Expert(name="late-local", backend="llamacpp", model="bundled:smollm2"))   # after the check
            late = httpx.post(gw + CHAT, json={"model": "late-local", "messages": [{"role": "user", "content": "hi"}]},
                              timeout=30)
            assert late.status_code == 503 and "run 'conclave worker' processes" in late.json()["error"]["message"]
            while sent < 800 and len([n for n in _per_process(prom).values() if n > 0]) < 2:
                statuses += list(pool.map(lambda _: _ask(gw), range(16)))
                sent += 16
            per_process = _per_process(prom)
            for _ in range(50):   # the last responses may leave before their process counts them
                if _scraped(gw) == sent + 2:
                    break
                time.sleep(0.1)
            total = _scraped(gw)
            per_process = _per_process(prom)
    finally:
        upstream.kill()
    assert statuses == [200] * sent
    assert len([n for n in per_process.values() if n > 0]) == 2, per_process   # both processes served
    assert total == sent + 2 == sum(per_process.values())                        # /metrics counts them all
    assert "with 2 processes" in (tmp_path / "server.log").read_text()


def test_serve_takes_host_port_and_processes_from_the_file_and_flags_win(tmp_path, monkeypatch, redis_prefix):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(
        (app, kw, os.environ.get("PROMETHEUS_MULTIPROC_DIR"))))
    config = tmp_path / "conclave.yaml"
    config.write_text("server: {host: 0.0.0.0, port: 9123, log_level: debug, shutdown_grace: 7}\n")
    monkeypatch.setenv("CONCLAVE_CONFIG", "")   # restored after the test: --config sets it for the process
    runner = CliRunner()
    assert runner.invoke(main, ["serve", "--config", str(config)]).exit_code == 0
    assert runner.invoke(main, ["serve", "--config", str(config), "--port", "9200"]).exit_code == 0
    (app, kw, prom), (_, kw2, _) = calls
    assert app == "service.http.app:create_app_from_env" and prom is None
    assert (kw["host"], kw["port"], kw["workers"], kw["log_level"], kw["timeout_graceful_shutdown"]) == (
        "0.0.0.0", 9123, 1, "debug", 7.0)
    assert kw2["port"] == 9200
    store = open_store(tmp_path / "home", REDIS_URL, redis_prefix)
    offer_bundled(store)
    for name in ("smollm2", "gemma-3-270m"):
        store.remove(name)
    config.write_text(f"server: {{workers: 3}}\nstore: {{redis_url: '{REDIS_URL}', redis_prefix: '{redis_prefix}'}}\n")
    assert runner.invoke(main, ["serve", "--config", str(config)]).exit_code == 0
    app, kw, prom = calls[-1]
    assert app == "service.http.app:create_shared_app_from_env" and kw["workers"] == 3 and prom is not None


@pytest.mark.real
def test_two_workers_send_local_experts_to_conclave_worker_processes(tmp_path, redis_prefix):
    """With the Redis queue a multi-process gateway accepts local experts: a `conclave worker` hosts them
    (the scripted one: it echoes), and both read one settings file."""
    config = tmp_path / "conclave.yaml"
    config.write_text(f"store: {{redis_url: '{REDIS_URL}', redis_prefix: '{redis_prefix}'}}\n"
                      "scheduler: {queue: redis}\nserver: {workers: 2}\n")
    env = {**os.environ, "CONCLAVE_HOME": str(tmp_path / "home"), "CONCLAVE_FAKE_GEN_S": "0"}
    worker = subprocess.Popen([CONCLAVE, "worker", "--kind", "fake", "--config", str(config), "--name", "w1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with running_gateway(tmp_path / "home", tmp_path / "server.log", ("--config", str(config))) as gw:
            body = {"model": "smollm2", "messages": [{"role": "user", "content": "echo me"}]}
            replies = [httpx.post(gw + CHAT, json=body, timeout=60) for _ in range(4)]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert [r.status_code for r in replies] == [200] * 4, replies[0].text
    assert all("echo me" in r.json()["choices"][0]["message"]["content"] for r in replies)
    assert all(r.headers["x-conclave-expert"] == "smollm2" for r in replies)
    assert "with 2 processes" in (tmp_path / "server.log").read_text()
