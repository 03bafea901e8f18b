"""End to end: the real server in a subprocess, the real local experts, the official openai client."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import openai
import pytest

from .conftest import REDIS_URL
from .servers import CONCLAVE, running_gateway

pytestmark = pytest.mark.real
HI = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    home = tmp_path_factory.mktemp("real-home")
    with running_gateway(home, home / "server.log", CONCLAVE_MAX_BODY_BYTES="200000",
                         CONCLAVE_MAX_TOKENS_CAP="512") as base:
        yield base, home


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=gateway[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_non_streaming_chat_with_smollm2(client):
    raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=HI, max_tokens=24,
                                                           temperature=0, seed=1)
    assert raw.headers["x-conclave-expert"] == "smollm2"
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert isinstance(text, str) and len(text.strip()) > 0
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert completion.to_dict()["conclave"]["expert"] == "smollm2"


def test_streaming_chat_with_smollm2(client):
    stream = client.chat.completions.create(model="smollm2", messages=HI, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.strip()) > 0
    assert all(c.to_dict()["conclave"]["expert"] == "smollm2" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_raw_sse_ends_with_done(gateway):
    body = {"model": "smollm2", "messages": HI, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", gateway[0] + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [l for l in r.iter_lines() if l]
    assert lines[-1] == "data: [DONE]" and all(l.startswith("data: ") for l in lines)


def test_gemma_answers_as_a_completion_expert(client):
    completion = client.chat.completions.create(
        model="gemma-3-270m", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24, temperature=0)
    assert "paris" in completion.choices[0].message.content.lower()


def test_routed_model_answers_and_explains(client):
    raw = client.chat.completions.with_raw_response.create(
        model="conclave-auto", messages=[{"role": "user", "content": "Give me one fact about facts."}],
        max_tokens=8, temperature=0)
    assert raw.headers["x-conclave-expert"] == "gemma-3-270m" and "facts" in raw.headers["x-conclave-route"]
    assert raw.parse().to_dict()["conclave"]["route"]["router"] == "declared"   # the untrained default


def test_models_lists_experts_and_virtual_model(client):
    ids = {m.id for m in client.models.list()}
    assert {"conclave-auto", "smollm2", "gemma-3-270m"} <= ids


def test_bad_inputs_map_to_openai_errors(client, gateway):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="ghost", messages=HI)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2", messages=HI, max_tokens=100_000)
    with pytest.raises(openai.BadRequestError) as err:   # validation errors are 400s naming the field, as OpenAI's
        client.chat.completions.create(model="smollm2", messages=HI, n=2)
    assert err.value.body["param"] == "n"
    base = gateway[0]
    r = httpx.post(base + "/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(base + "/v1/chat/completions", json={"model": "smollm2", "messages": [
        {"role": "user", "content": "x" * 300_000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert httpx.get(base + "/health").json()["status"] == "ok"   # nothing crashed


def test_health_answers_while_a_generation_runs(gateway):
    base = gateway[0]
    done = threading.Event()

    def long_generation():
        httpx.post(base + "/v1/chat/completions", timeout=120,
                   json={"model": "smollm2", "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
                         "max_tokens": 300, "temperature": 0, "stop": ["zzzz"]})
        done.set()

    worker = threading.Thread(target=long_generation)
    worker.start()
    try:
        _wait_generating(base)
        assert httpx.get(base + "/health", timeout=30).status_code == 200
        assert not done.is_set(), "health should have answered while the story was still being written"
    finally:
        worker.join(120)


def _wait_generating(base: str) -> None:
    """Until the story's request is in flight at the gateway."""
    import time

    for _ in range(500):
        metrics = httpx.get(base + "/metrics").text
        if 'conclave_inflight_requests{route="/v1/chat/completions"} 1.0' in metrics:
            return
        time.sleep(0.01)
    raise AssertionError("the story request never reached the gateway")


def test_client_disconnect_mid_stream_leaves_server_healthy(client, gateway):
    body = {"model": "smollm2", "messages": HI, "max_tokens": 200, "stream": True}
    with httpx.stream("POST", gateway[0] + "/v1/chat/completions", json=body, timeout=120) as r:
        next(r.iter_lines())
    completion = client.chat.completions.create(model="smollm2", messages=HI, max_tokens=4)
    assert completion.choices[0].message.content is not None


def test_litellm_expert_served_through_an_openai_compatible_endpoint(client, gateway):
    """A litellm expert whose endpoint is a real OpenAI-compatible server (this gateway itself)."""
    base, home = gateway
    add = subprocess.run([CONCLAVE, "experts", "add", "via-litellm", "--backend", "litellm",
                          "--model", "openai/smollm2", "--api-base", base + "/v1"],
                         capture_output=True, text=True, env=_env(home), timeout=60)
    assert add.returncode == 0, add.stderr
    raw = client.chat.completions.with_raw_response.create(model="via-litellm", messages=HI, max_tokens=12,
                                                           temperature=0)
    assert raw.headers["x-conclave-expert"] == "via-litellm"
    completion = raw.parse()
    assert completion.choices[0].message.content.strip()
    assert completion.usage.completion_tokens > 0
    stream = client.chat.completions.create(model="via-litellm", messages=HI, max_tokens=12, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()


def _env(home):
    import os

    return {**os.environ, "CONCLAVE_HOME": str(home)}


def test_api_keys_on(tmp_path):
    with running_gateway(tmp_path / "h", tmp_path / "log", CONCLAVE_API_KEYS="sk-one,sk-two") as base:
        bad = openai.OpenAI(base_url=base + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="smollm2", messages=HI, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=base + "/v1", api_key="sk-two", max_retries=0, timeout=120)
        assert good.chat.completions.create(model="smollm2", messages=HI, max_tokens=2).choices
        assert httpx.get(base + "/health").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_registry_records_survive_a_gateway_restart(tmp_path, backend, request):
    env = {}
    if backend == "redis":
        env = {"CONCLAVE_REDIS_URL": REDIS_URL, "CONCLAVE_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}
    home = tmp_path / "h"
    import os

    cli_env = {**os.environ, "CONCLAVE_HOME": str(home), **env}
    add = subprocess.run([CONCLAVE, "experts", "add", "persisted", "--backend", "litellm", "--model", "openai/x"],
                         capture_output=True, text=True, env=cli_env, timeout=60)
    assert add.returncode == 0, add.stderr
    for _ in range(2):  # two gateway lifetimes
        with running_gateway(home, tmp_path / "log", **env) as base:
            ids = [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]]
            assert "persisted" in ids and "smollm2" in ids


def test_concurrent_requests_share_one_model_safely(client):
    """Several requests at once on one loaded model (its lock serialises them) and another model."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(model):
        return client.chat.completions.create(model=model, messages=HI, max_tokens=8, temperature=0)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, ["smollm2", "smollm2", "gemma-3-270m", "smollm2"]))
    assert [r.model for r in results] == ["smollm2", "smollm2", "gemma-3-270m", "smollm2"]
    assert all(r.choices[0].message.content is not None for r in results)
    answers = {r.choices[0].message.content for r in results if r.model == "smollm2"}
    assert len(answers) == 1  # same prompt, temperature 0, one model: identical answers, no interleaving


QUESTION = [{"role": "user", "content": "Which planet is known as the Red Planet? (A) Venus (B) Mars (C) Jupiter "
                                        "(D) Saturn. Answer with the letter: The answer is (X)."}]


def test_k2_vote_with_real_experts_non_streaming(client):
    raw = client.chat.completions.with_raw_response.create(
        model="conclave-auto", messages=QUESTION, max_tokens=32, temperature=0,
        extra_body={"conclave": {"k": 2, "aggregator": "vote", "return_candidates": True}})
    assert sorted(raw.headers["x-conclave-candidates"].split(",")) == ["gemma-3-270m", "smollm2"]
    assert raw.headers["x-conclave-aggregator"] == "vote"
    completion = raw.parse()
    agg = completion.to_dict()["conclave"]["aggregation"]
    texts = {c["expert"]: c["text"] for c in agg["candidates"]}
    assert set(texts) == {"gemma-3-270m", "smollm2"}
    assert completion.choices[0].message.content == texts[raw.headers["x-conclave-expert"]]


def test_k2_synthesis_with_real_experts_streaming(client):
    stream = client.chat.completions.create(
        model="conclave-auto", messages=QUESTION, max_tokens=32, temperature=0, stream=True,
        extra_body={"conclave": {"k": 2, "aggregator": "synthesis"}})
    chunks = list(stream)
    info = chunks[0].to_dict()["conclave"]
    assert info["aggregation"]["aggregator"] == "synthesis"
    assert sorted(info["aggregation"]["experts"]) == ["gemma-3-270m", "smollm2"]
    assert info["aggregation"]["aggregated_by"] == info["expert"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()


def test_a_dead_expert_among_k_leaves_the_survivor_answering(client, gateway):
    base, home = gateway
    add = subprocess.run([CONCLAVE, "experts", "add", "dead-end", "--backend", "litellm", "--model", "openai/x",
                          "--api-base", "http://127.0.0.1:9/v1", "--skill", "planet"],
                         capture_output=True, text=True, env=_env(home), timeout=60)
    assert add.returncode == 0, add.stderr
    try:
        deadline = time.monotonic() + 10    # the gateway sees a CLI change within CONCLAVE_EXPERT_CACHE_SECONDS (2)
        while "dead-end" not in {m.id for m in client.models.list()} and time.monotonic() < deadline:
            time.sleep(0.2)
        completion = client.chat.completions.create(
            model="conclave-auto", messages=QUESTION, max_tokens=16, temperature=0,
            extra_body={"conclave": {"k": 2, "aggregator": "vote"}})
        agg = completion.to_dict()["conclave"]["aggregation"]
        assert list(agg["failed"]) == ["dead-end"] and completion.choices[0].message.content
    finally:
        subprocess.run([CONCLAVE, "experts", "remove", "dead-end"], env=_env(home), timeout=60)


def test_sigterm_lets_the_in_flight_answer_finish(tmp_path):
    """Graceful shutdown: a request in flight when SIGTERM arrives is still answered in full."""
    import signal

    from .servers import CONCLAVE as exe, free_port, _wait_ready
    import os

    port, log = free_port(), tmp_path / "log"
    env = {**os.environ, "CONCLAVE_HOME": str(tmp_path / "h"), "CONCLAVE_SHUTDOWN_GRACE": "60"}
    with open(log, "w") as out:
        proc = subprocess.Popen([exe, "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log)
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
                "max_tokens": 120, "temperature": 0, "stream": True}
        rest = []
        try:
            with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=120) as r:
                lines = r.iter_lines()
                next(lines)                       # the answer has started
                proc.send_signal(signal.SIGTERM)  # shutdown begins while it streams
                rest = [l for l in lines if l]
        except httpx.HTTPError as exc:
            raise AssertionError(f"stream cut after {len(rest)} lines ({exc}); server log:\n{log.read_text()}")
        assert rest[-1] == "data: [DONE]"
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    finally:
        if proc.poll() is None:
            proc.kill()


def test_live_skill_profiles_route_real_requests(tmp_path):
    """`conclave profile build` with the real experts on MMLU dev, then the gateway routes with it."""
    import os

    home = tmp_path / "h"
    env = {**os.environ, "CONCLAVE_HOME": str(home)}
    build = subprocess.run([CONCLAVE, "profile", "build", "--n", "3", "--max-tokens", "24"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stderr
    assert "skills profile: 2 experts" in build.stdout and (home / "outcomes" / "live.json").is_file()
    with running_gateway(home, tmp_path / "log", CONCLAVE_ROUTER="skills") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(
            model="conclave-auto", max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "What is the derivative of x^2?"}])
        assert raw.headers["x-conclave-router"] == "skills"
        route = raw.parse().to_dict()["conclave"]["route"]
        assert route["experts"][0] in ("smollm2", "gemma-3-270m") and "global competency" in route["reason"]
    bad = subprocess.run([CONCLAVE, "serve", "--port", "1"], capture_output=True, text=True, timeout=60,
                         env={**env, "CONCLAVE_ROUTER": "coe"})
    assert bad.returncode == 1 and "conclave router train coe" in bad.stderr


def test_live_correctness_router_is_the_default_and_k_auto_reports_calls(tmp_path):
    """The routing acceptance path, live: `conclave profile build` (bundled experts, a small slice),
    `conclave router train correct --live`, then `conclave-auto` routes with it unconfigured."""
    import os

    home = tmp_path / "h"
    env = {**os.environ, "CONCLAVE_HOME": str(home)}
    build = subprocess.run([CONCLAVE, "profile", "build", "--n", "4", "--max-tokens", "24"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stderr
    train = subprocess.run([CONCLAVE, "router", "train", "correct", "--live"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert train.returncode == 0, train.stderr
    assert "trained correct on 4 questions x 2 experts" in train.stdout and "calibration" in train.stdout
    ask = [{"role": "user", "content": "What is the derivative of x^2?"}]
    with running_gateway(home, tmp_path / "log") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(model="conclave-auto", max_tokens=8,
                                                               temperature=0, messages=ask)
        assert raw.headers["x-conclave-router"] == "correct"
        route = raw.parse().to_dict()["conclave"]["route"]
        assert route["experts"][0] in ("smollm2", "gemma-3-270m") and "predicted correctness" in route["reason"]
        assert {s["expert"] for s in route["scores"]} == {"smollm2", "gemma-3-270m"}
        assert all(0 < s["p_correct"] < 1 for s in route["scores"])
        raw = client.chat.completions.with_raw_response.create(model="conclave-auto", max_tokens=8, temperature=0,
                                                               messages=ask, extra_body={"conclave": {"k": "auto"}})
        body = raw.parse().to_dict()["conclave"]
        assert raw.headers["x-conclave-aggregator"] == "weighted-vote"
        assert body["aggregation"]["calls"] == int(raw.headers["x-conclave-calls"]) >= 1
        assert body["aggregation"]["calls"] <= body["route"]["stopping"]["max_calls"]
