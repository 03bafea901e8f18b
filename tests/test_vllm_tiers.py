"""The vLLM worker's logic without vLLM: engine settings and the GPU memory split (pure), tier
bookkeeping and its priors, the scheduler's switch cost, prefetch, and the worker driving a scripted
engine that follows AsyncLLM's method names (generate, abort, sleep(level), wake_up(tags),
is_sleeping, collective_rpc, shutdown, get_tokenizer).  No GPU and no vllm needed; the real engine
is tests/test_vllm_worker.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from experts_registry.errors import ExpertUnavailable, ValidationFailed
from experts_registry.model import Expert
from service.backends import GenParams
from service.scheduler.affinity import AffinityPolicy, ClusterView, Queue
from service.workers.base import Job
from service.workers.prefetch import plan_prefetch, read_files
from service.workers.tiers import TierBook, prior_s
from service.workers.vllm_convert import check_model_ref
from service.workers.vllm_plan import Platform, engine_kwargs, memory_fraction
from service.workers.vllm_worker import VllmWorker

H100 = Platform("cuda", 1, 81559, True)
CPU = Platform("cpu")


def vexpert(name: str, model: str = "/m", **kw) -> Expert:
    return Expert(name=name, backend="vllm", model=model, **kw)


# -- engine settings and the memory split -------------------------------------------------------------
def test_gpu_defaults_cuda_graphs_full_context_and_a_memory_share_cpu_stays_eager_and_capped():
    e = vexpert("big", context_length=32768, memory_mb=20000)
    gpu = engine_kwargs(e, "/m", H100, memory_mb=70000, max_models=3)
    assert gpu["enforce_eager"] is False and gpu["max_model_len"] == 32768 and gpu["enable_sleep_mode"] is True
    assert gpu["gpu_memory_utilization"] == round(20000 / 81559, 4) and gpu["dtype"] == "bfloat16"
    assert engine_kwargs(vexpert("e", enforce_eager=True), "/m", H100, 70000)["enforce_eager"] is True
    cpu = engine_kwargs(e, "/m", CPU)
    assert cpu["enforce_eager"] is True and cpu["max_model_len"] == 1024 and "gpu_memory_utilization" not in cpu
    assert "enable_sleep_mode" not in cpu and cpu["dtype"] == "float32"
    with pytest.raises(ExpertUnavailable, match="needs GPUs"):
        engine_kwargs(vexpert("tp", tensor_parallel_size=2), "/m", CPU)


def test_several_engines_share_one_gpu_by_memory_mb_and_a_budget_that_cannot_hold_one_says_so():
    two = [memory_fraction(vexpert(n, memory_mb=30000), H100, 70000, 2) for n in ("a", "b")]
    assert sum(two) < 0.92 and two[0] == round(30000 / 81559, 4)          # two engines fit; vLLM's default would not
    even = memory_fraction(vexpert("x"), H100, 60000, 3)                   # no memory_mb: an equal share
    assert even == round(20000 / 81559, 4)
    default = memory_fraction(vexpert("y"), H100, None, 2)                 # no budget: 90% of the GPU, halved
    assert default == round(int(0.9 * 81559) // 2 / 81559, 4)
    with pytest.raises(ExpertUnavailable, match="needs 80000 MB .* budget is 70000 MB .*CONCLAVE_WORKER_MEMORY_MB"):
        memory_fraction(vexpert("huge", memory_mb=80000), H100, 70000, 1)
    with pytest.raises(ExpertUnavailable, match="tensor_parallel_size=2 GPUs but this worker has 1"):
        memory_fraction(vexpert("tp", tensor_parallel_size=2), H100, 70000, 1)
    two_gpus = Platform("cuda", 2, 81559, True)
    assert memory_fraction(vexpert("tp", tensor_parallel_size=2, memory_mb=120000), two_gpus, 150000, 1) == \
        round(60000 / 81559, 4)                                            # split over its GPUs
    with pytest.raises(ExpertUnavailable, match="on each of 1 GPU"):
        memory_fraction(vexpert("wide", memory_mb=140000), two_gpus, 150000, 1)


def test_expert_record_fields_for_vllm_validate():
    assert vexpert("a").tensor_parallel_size == 1 and vexpert("a").enforce_eager is False
    with pytest.raises(ValidationFailed, match="tensor_parallel_size"):
        vexpert("a", tensor_parallel_size=0)
    assert Expert.from_json(vexpert("a", tensor_parallel_size=4).to_json()).tensor_parallel_size == 4


def test_model_reference_forms(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(ValidationFailed, match="needs config.json and \\*.safetensors"):
        check_model_ref(str(hf))
    (hf / "model.safetensors").write_bytes(b"x")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    assert [check_model_ref(r) for r in ("bundled:smollm2", str(gguf), str(hf))] == ["bundled", "gguf", "hf-dir"]
    for bad, why in (("bundled:nope", "unknown bundled id"), (str(tmp_path / "gone"), "does not exist here"),
                     (str(hf / "config.json"), "not a .gguf"), ("openai/gpt-4o", "does not exist here")):
        with pytest.raises(ValidationFailed, match=why) as err:
            check_model_ref(bad)
        assert "Hugging Face model folder" in err.value.message
    assert check_model_ref("/on/the/worker/model.gguf", here=False) == "gguf"


# -- tiers ----------------------------------------------------------------------------------------------
def test_priors_are_the_published_figures_scaled_by_size_and_measurements_replace_them():
    assert prior_s("sleep1", 1.2 * 1024) == 0.26 and prior_s("sleep2", 1.2 * 1024) == 0.85
    assert prior_s("sleep1", 8.4 * 1024) == 0.82 and prior_s("page_cache", 8.4 * 1024) == 58.1
    assert prior_s("disk", 16 * 1024) - prior_s("page_cache", 16 * 1024) == pytest.approx(11.0 - 2.8, abs=0.01)
    assert prior_s("gpu", 1e5) == 0 and prior_s("sleep1", 100) == 0.26              # held at the published ends
    assert prior_s("sleep1", 16 * 1024) == 0.82 and prior_s("sleep2", 4.8 * 1024) == pytest.approx(1.715, abs=0.01)
    assert prior_s("page_cache", 500, on_gpu=False) == 35.0
    book = TierBook(on_gpu=True)
    book.set("a", "sleep1", weights_mb=16 * 1024)
    assert book.cost_s("a") == prior_s("sleep1", 16 * 1024)
    book.measured("a", "sleep1", 0.4)
    book.measured("a", "sleep1", 0.6)
    assert book.cost_s("a") == pytest.approx(0.5) and book.switch_costs() == {"a": 0.5}
    rep = book.report()["a"]
    assert rep["tier"] == "sleep1" and rep["measured"] == ["sleep1"] and set(rep["cost_s"]) == \
        {"sleep1", "sleep2", "page_cache", "disk"}
    assert set(TierBook(on_gpu=False).report()) == set()


def test_level_one_while_pinned_host_memory_holds_the_sleepers_else_level_two():
    book = TierBook(on_gpu=True)
    for name in ("a", "b", "c"):
        book.set(name, "gpu", weights_mb=1000)
    assert book.sleep_level("a", 2500) == 1
    book.set("a", "sleep1")
    assert book.sleep_level("b", 2500) == 1
    book.set("b", "sleep1")
    assert book.host_mb() == 2000 and book.sleep_level("c", 2500) == 2
    assert book.sleep_level("c", None) == 2


def test_the_scheduler_prefers_the_expert_that_is_cheaper_to_switch_to():
    pol = AffinityPolicy(max_batch=4, max_wait=30)
    view = ClusterView(10.0, {"a": Queue(2, 5.0, 9.0, 2), "b": Queue(2, 5.0, 9.0, 2)})
    plain = [c.expert for c in pol.decide(view, "w1", [], gen_s=0.1, load_s=40)]
    assert plain == ["a", "b"]                                                 # equal scores: arrival order
    tiered = pol.decide(view, "w1", [], gen_s=0.1, load_s=40, switch_s={"a": 58.1, "b": 0.26})
    assert [c.expert for c in tiered] == ["b", "a"]                            # b is asleep in host memory
    from service.scheduler.policy import BatchPolicy, Pending

    single = BatchPolicy(4, 30)
    for i, e in enumerate(("a", "b", "c")):
        single.add(Pending(i, e, 5.0))
    assert single.next([], 10.0, switch_s={"b": 0.82, "c": 2.58}).expert == "b"   # "a": not listed, dearest
    # urgency uses the tier's cost: a cold start of 20 s makes "a" urgent earlier than a 0.3 s wake
    assert pol.urgent_at(view.queues["a"], 0.1, 20.0) < pol.urgent_at(view.queues["a"], 0.1, 0.3)


# -- prefetch -------------------------------------------------------------------------------------------
def test_prefetch_plan_and_a_real_file_read(tmp_path):
    assert plan_prefetch("disk", 100, 1000) == "page_cache"
    assert plan_prefetch("disk", 800, 1000) is None                            # would evict what it fills
    assert plan_prefetch("disk", 100, None) is None
    assert plan_prefetch("sleep2", 100, 1000, gpu_room_mb=200, pinned_room_mb=200) == "sleep1"
    assert plan_prefetch("sleep2", 100, 1000, gpu_room_mb=50, pinned_room_mb=200) is None
    assert plan_prefetch("sleep1", 100, 1000, gpu_room_mb=200, pinned_room_mb=200) is None
    (tmp_path / "a.safetensors").write_bytes(b"x" * 3_000_000)
    (tmp_path / "config.json").write_text("{}")
    assert read_files(tmp_path) == 3_000_000                                   # weights only, every byte


# -- the worker on a scripted engine ----------------------------------------------------------------------
class Tok:
    chat_template = "scripted"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return " ".join(m["content"] for m in messages)

    def encode(self, text, add_special_tokens=False):
        return list(range(len(text.split())))

    def __len__(self):                  # the vocabulary's size
        return 50000


@dataclass
class Piece:
    text: str
    token_ids: list
    finish_reason: str | None = None
    logprobs: list | None = None


@dataclass
class Out:
    outputs: list
    finished: bool


@dataclass
class ScriptedEngine:
    kwargs: dict
    words: tuple = ("Hello", " from", " the", " engine")
    level: int = 0
    events: list = field(default_factory=list)

    def get_tokenizer(self):
        return Tok()

    async def generate(self, prompt, sp, request_id):
        """DELTA outputs, one per token (with its logprobs when asked); final_only: one with everything."""
        n = min(len(self.words), sp["max_tokens"])
        ranked = (lambda i: [{i: SimpleNamespace(decoded_token=self.words[i], logprob=-0.5, rank=1)}]) \
            if sp.get("logprobs") is not None else (lambda i: None)
        for i in range(n):
            await asyncio.sleep(0.001)
            self.events.append(("token", request_id, i))
            if not sp.get("final_only"):
                yield Out([Piece(self.words[i], [i], "length" if i == n - 1 else None, ranked(i))], i == n - 1)
        if sp.get("final_only"):
            yield Out([Piece("".join(self.words[:n]), list(range(n)), "length")], True)

    async def abort(self, request_id):
        self.events.append(("abort", request_id))

    async def sleep(self, level=1):
        self.level = level
        self.events.append(("sleep", level))

    async def wake_up(self, tags=None):
        self.events.append(("wake_up", tuple(tags) if tags else None))
        if tags is None or "kv_cache" in tags:
            self.level = 0
        return self.level == 0

    async def is_sleeping(self):
        return self.level > 0

    async def collective_rpc(self, method, *args):
        self.events.append(("rpc", method))

    def shutdown(self):
        self.events.append(("shutdown",))


def model_folder(root: Path, name: str, mb: int = 1) -> Path:
    d = root / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (d / "model.safetensors").write_bytes(b"w" * (mb * 1024 * 1024))
    return d


def scripted_worker(tmp_path, platform, **kw):
    started: list[ScriptedEngine] = []

    async def start(kwargs):
        started.append(ScriptedEngine(kwargs))
        return started[-1]

    w = VllmWorker(tmp_path / "home", platform=platform, start=start, sampling=lambda **k: k, **kw)
    return w, started


def test_a_batch_runs_concurrently_and_each_job_streams_delta_by_delta(tmp_path):
    e = vexpert("a", str(model_folder(tmp_path, "a")))
    w, started = scripted_worker(tmp_path, CPU)
    w.load(e)
    outs = [[], [], []]
    jobs = [Job("a", [{"role": "user", "content": f"question {i}"}], GenParams(max_tokens=3), out.append)
            for i, out in enumerate(outs)]
    w.generate(e, jobs)
    for out in outs:
        assert [d.text for d in out] == ["Hello", " from", " the", ""]         # one Delta per token, then the end
        assert out[-1].finish_reason == "length" and out[-1].usage == {"prompt_tokens": 2, "completion_tokens": 3,
                                                                          "total_tokens": 5}
    order = [ev[1] for ev in started[0].events if ev[0] == "token"]
    assert len(order) == 9 and len(set(order[:3])) == 3                        # interleaved: all at once, one loop
    assert started[0].kwargs["enforce_eager"] is True and started[0].kwargs["max_model_len"] == 1024
    w.close()


def test_a_cancelled_job_is_aborted_in_the_engine_and_gets_nothing_more(tmp_path):
    e = vexpert("a", str(model_folder(tmp_path, "a")))
    w, started = scripted_worker(tmp_path, CPU)
    w.load(e)
    out: list = []
    job = Job("a", [{"role": "user", "content": "hi"}], GenParams(max_tokens=4), None)
    job.sink = lambda d: (out.append(d), job.cancel.set())                     # the client leaves after one delta
    w.generate(e, [job])
    assert [d.text for d in out] == ["Hello"]
    assert any(ev[0] == "abort" for ev in started[0].events)
    refused: list = []
    w.generate(e, [Job("a", [{"role": "user", "content": "hi"}], GenParams(tools=[{"type": "function"}]),
                       refused.append)])
    assert refused[0].param == "tools" and "cannot serve 'tools'" in str(refused[0])
    w.close()


def test_each_delta_carries_its_tokens_logprobs_and_a_raw_job_is_delivered_whole(tmp_path):
    from service.core.completions import raw_messages

    e = vexpert("a", str(model_folder(tmp_path, "a")))
    w, started = scripted_worker(tmp_path, CPU)
    w.load(e)
    scored, raw, long = [], [], []
    w.generate(e, [Job("a", [{"role": "user", "content": "hi"}], GenParams(max_tokens=2, logprobs=True), scored.append),
                   Job("a", raw_messages("one two"), GenParams(raw=True, max_tokens=3), raw.append),
                   Job("a", raw_messages("w " * 1024), GenParams(raw=True), long.append)])
    assert [(d.text, [x["token"] for x in d.logprobs or ()]) for d in scored] == \
        [("Hello", ["Hello"]), (" from", [" from"]), ("", [])]               # each delta: its own token's entry
    assert scored[0].logprobs[0]["logprob"] == -0.5 and scored[0].logprobs[0]["top_logprobs"] == []
    assert [d.text for d in raw] == ["Hello from the", ""] and raw[-1].usage["prompt_tokens"] == 2
    assert long[0].param == "prompt" and "maximum context length is 1024" in long[0].message
    w.close()


def test_a_dead_engine_fails_its_jobs_and_is_started_afresh_on_the_next_load(tmp_path):
    e = vexpert("a", str(model_folder(tmp_path, "a")))
    w, started = scripted_worker(tmp_path, CPU)
    w.load(e)

    async def dies(prompt, sp, request_id):
        started[0].errored = True
        raise RuntimeError("EngineCore died")
        yield   # an async generator, as AsyncLLM.generate

    started[0].generate = dies
    out: list = []
    w.generate(e, [Job("a", [{"role": "user", "content": "hi"}], GenParams(), out.append)])
    assert "EngineCore died" in str(out[0]) and w.loaded() == [] and "a" not in w.engines
    w.load(e)
    assert len(started) == 2
    w.close()


def test_on_cpu_a_switch_shuts_the_engine_down_and_the_next_load_starts_a_new_one(tmp_path):
    e = vexpert("a", str(model_folder(tmp_path, "a")))
    w, started = scripted_worker(tmp_path, CPU)
    w.load(e)
    w.unload("a")
    assert started[0].events[-1] == ("shutdown",) and not any(ev[0] == "sleep" for ev in started[0].events)
    assert w.engines == {} and w.tiers()["a"]["tier"] == "page_cache"
    w.load(e)
    assert len(started) == 2 and w.tiers()["a"]["measured"] == ["disk", "page_cache"]
    w.close()


def test_on_a_gpu_a_switch_sleeps_level_one_then_two_and_a_load_wakes_it(tmp_path):
    a, b = (vexpert(n, str(model_folder(tmp_path, n, mb=2)), memory_mb=1000) for n in ("a", "b"))
    w, started = scripted_worker(tmp_path, H100, memory_mb=4000, host_memory_mb=3.0)
    w.load(a)
    w.unload("a")                                                              # 2 MB pinned: fits 3 MB
    w.load(b)
    w.unload("b")                                                              # 2 + 2 > 3: level 2
    assert (started[0].level, started[1].level) == (1, 2)
    assert {n: t["tier"] for n, t in w.tiers().items()} == {"a": "sleep1", "b": "sleep2"}
    assert w.switch_costs()["a"] < w.switch_costs()["b"]
    w.load(b)
    assert started[1].events[-3:] == [("wake_up", ("weights",)), ("rpc", "reload_weights"), ("wake_up", ("kv_cache",))]
    assert len(started) == 2 and w.tiers()["b"]["tier"] == "gpu" and "sleep2" in w.tiers()["b"]["measured"]
    w.load(a)
    assert started[0].events[-1] == ("wake_up", None) and started[0].level == 0
    assert started[0].kwargs["gpu_memory_utilization"] == round(1000 / 81559, 4)
    w.close()
    assert all(s.events[-1] == ("shutdown",) for s in started)


def test_a_gpu_worker_refuses_an_expert_its_budget_cannot_hold_before_loading_it(tmp_path):
    w, started = scripted_worker(tmp_path, H100, memory_mb=150000)          # a budget bigger than its GPU
    with pytest.raises(ExpertUnavailable, match="needs 80000 MB on each of 1 GPU.*raise tensor_parallel_size"):
        w.make_room(vexpert("big", str(model_folder(tmp_path, "big")), memory_mb=80000), [])
    with pytest.raises(ExpertUnavailable, match="tensor_parallel_size=2 GPUs"):
        w.can_host(vexpert("tp", tensor_parallel_size=2))
    with pytest.raises(ExpertUnavailable, match="is a llamacpp expert; worker 'vllm-0' runs vllm"):
        w.can_host(Expert(name="l", backend="llamacpp", model="bundled:smollm2"))
    assert started == []


def test_prefetch_reads_a_cold_expert_into_the_page_cache_and_deepens_a_level_two_sleeper(tmp_path):
    a, b, c = (vexpert(n, str(model_folder(tmp_path, n, mb=2)), memory_mb=1000) for n in ("a", "b", "c"))
    w, started = scripted_worker(tmp_path, H100, memory_mb=4000, host_memory_mb=3.0)
    w.load(a)                                                                  # the book exists once a load ran
    assert w.prefetch(c) == "page_cache"
    w.prefetcher.join(10)
    assert w.tiers()["c"]["tier"] == "page_cache"
    w.unload("a")                                                              # a: sleep1 (2 of 3 MB pinned)
    w.load(b)
    w.unload("b")                                                              # b: sleep2
    w.load(a)                                                                  # a awake again: 3 MB pinned free
    assert w.prefetch(b) == "sleep1"
    w.prefetcher.join(10)
    assert started[1].level == 1 and w.tiers()["b"]["tier"] == "sleep1"
    assert ("rpc", "reload_weights") in started[1].events and started[1].events[-1] == ("sleep", 1)
    assert w.prefetch(a) is None                                               # loaded: nothing to move
    w.close()


def test_the_reaper_stops_a_killed_workers_spawned_children(tmp_path):
    """vLLM spawns its engine core; when the worker is SIGKILLed the reaper stops what it had started."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from service.workers.reaper import descendants, parents

    script = ("import multiprocessing, time\n"
              "from service.workers.reaper import start_reaper\n"
              "if __name__ == '__main__':\n"
              "    start_reaper()\n"
              "    p = multiprocessing.get_context('spawn').Process(target=time.sleep, args=(120,))\n"
              "    p.start(); time.sleep(3); print(p.pid, flush=True); time.sleep(120)\n")
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    child = int(worker.stdout.readline())
    assert child in descendants(worker.pid, parents())
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state == "Z":         # exited; only the reaping by init is left
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the spawned child outlived the worker that was SIGKILLed")


def test_a_job_that_needs_whole_outputs_gets_them_through_deliver():
    """The hook for jobs that read a whole RequestOutput (final_only sampling: prompt logprobs, echo)."""
    from service.workers import vllm_engine as ve

    engine, got, emitted = ScriptedEngine({}), [], []
    job = Job("a", [], GenParams(), emitted.append)
    asyncio.run(ve.run_batch(engine, [(job, [1, 2], {"max_tokens": 2}, got.append)], "a"))
    assert [o.outputs[0].text for o in got] == ["Hello", " from"] and got[-1].finished and emitted == []
