"""The llama.cpp worker and the scheduler with the bundled GGUF models (real llama.cpp)."""

from __future__ import annotations

import asyncio

import pytest

from experts_registry.bundled import BUNDLED
from experts_registry.errors import ExpertUnavailable
from service.backends import GenParams, collect
from service.scheduler.local import LocalScheduler
from service.scheduler.offline import run_offline
from service.scheduler.policy import BatchPolicy
from service.workers.base import END, Job
from service.workers.llamacpp_worker import LlamaCppWorker

pytestmark = pytest.mark.real
SMOL, GEMMA = BUNDLED["smollm2"], BUNDLED["gemma-3-270m"]
PIRATE = SMOL.__class__(**{**SMOL.to_dict(), "name": "smol-pirate", "system_prompt": "Answer like a pirate."})
PARAMS = GenParams(max_tokens=6, temperature=0.0)


@pytest.fixture(scope="module")
def models_home(tmp_path_factory):
    """One data dir for the module, so Gemma's GGUF is assembled once."""
    return tmp_path_factory.mktemp("models-home")


def job(expert, text, out):
    return Job(expert.name, [{"role": "user", "content": text}], PARAMS, out.append)


def test_worker_loads_runs_a_batch_and_really_unloads(models_home):
    w = LlamaCppWorker(models_home, max_models=1, threads=1)
    assert w.load(SMOL) > 0 and w.loaded() == ["smollm2"]
    llm = w.models["smollm2"].llm
    outs = [[], [], []]
    batch = [job(SMOL, "Say hi.", outs[0]), job(SMOL, "Name a colour.", outs[1]), job(SMOL, "Count to 3.", outs[2])]
    batch[2].cancel.set()
    w.generate(SMOL, batch)
    for out in outs[:2]:
        assert "".join(d.text for d in out).strip() and out[-1].usage["completion_tokens"] > 0
    assert outs[2] == []                            # cancelled before its turn: skipped
    w.unload("smollm2")
    assert w.loaded() == [] and llm._model.model is None   # llama.cpp freed the weights
    w.load(GEMMA)
    out = []
    w.generate(GEMMA, [job(GEMMA, "What is the capital of France?", out)])
    assert out[-1].finish_reason in ("stop", "length")
    w.close()
    assert w.loaded() == []


def test_worker_refuses_an_expert_over_its_memory_budget(models_home):
    w = LlamaCppWorker(models_home, max_models=2, memory_mb=300)
    w.can_host(SMOL)
    with pytest.raises(ExpertUnavailable, match="gemma-3-270m.*373 MB.*300 MB"):
        w.can_host(GEMMA)


def test_scheduler_groups_real_requests_by_expert(models_home):
    async def main():
        w = LlamaCppWorker(models_home, max_models=1, threads=1)
        s = LocalScheduler([w], BatchPolicy(max_batch=16, max_wait=60))
        order = [SMOL, PIRATE, GEMMA] * 3
        gens = await asyncio.gather(*[collect(s.stream(e, [{"role": "user", "content": f"Say {i}."}], PARAMS))
                                      for i, e in enumerate(order)])
        await asyncio.to_thread(s.close)
        return gens, s.stats.snapshot()
    gens, snap = asyncio.run(main())
    assert len(gens) == 9 and all(g.usage["completion_tokens"] > 0 for g in gens)
    assert snap["loads_by_expert"] == {"smollm2": 1, "smol-pirate": 1, "gemma-3-270m": 1}
    assert snap["jobs"] == 9 and snap["load_seconds"] > 0 and snap["generate_seconds"] > 0


def test_offline_mode_loads_each_expert_once(models_home):
    w = LlamaCppWorker(models_home, max_models=1, threads=1)
    outs: dict[int, list] = {}
    pairs = []
    for i, e in enumerate([GEMMA, SMOL, GEMMA, SMOL, PIRATE]):
        outs[i] = []
        pairs.append((e, Job(e.name, [{"role": "user", "content": f"Q{i}?"}], PARAMS, outs[i].append)))
    stats = run_offline(w, pairs, max_batch=2)
    assert stats["loads_by_expert"] == {"gemma-3-270m": 1, "smollm2": 1, "smol-pirate": 1}
    assert all(out[-1] is END and isinstance(out[-2].usage, dict) for out in outs.values())
    assert w.loaded() == []


def test_the_embedded_gateway_serves_llamacpp_experts_through_the_scheduler(models_home, client_for):
    from experts_registry import open_store
    from service.backends import BackendPool
    from service.core.config import load_settings
    from service.pipeline.gateway import Gateway

    settings = load_settings().with_(home=models_home, llama_threads=1, max_loaded_models=1)
    store = open_store(models_home / "store")
    store.add(SMOL)
    store.add(PIRATE)
    client = client_for(Gateway(settings, store, BackendPool(settings)))
    for model in ("smollm2", "smol-pirate", "smollm2"):
        r = client.post("/v1/chat/completions", json={"model": model, "max_tokens": 4,
                                                      "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    text = client.get("/metrics").text
    assert 'conclave_scheduler_loads_total{expert="smollm2",kind="llamacpp"} 2.0' in text
    assert 'conclave_scheduler_unloads_total{kind="llamacpp"} 2.0' in text
