"""/v1/completions end to end: the real server in a subprocess, the bundled llama.cpp experts, the official
``openai`` client, lm-evaluation-harness's own loglikelihood request, and the Redis queue to a real
``conclave worker`` process."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import REDIS_URL, redis_available
from .servers import running_gateway

pytestmark = pytest.mark.real
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    home = tmp_path_factory.mktemp("completions-home")
    with running_gateway(home, home / "server.log", CONCLAVE_MAX_TOKENS_CAP="512") as base:
        yield base, home


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=gateway[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_plain_completion_with_the_openai_client(client):
    c = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=4, temperature=0)
    assert c.object == "text_completion" and c.model == "smollm2"
    assert c.choices[0].text.strip() and c.choices[0].finish_reason in ("stop", "length")
    assert c.choices[0].logprobs is None
    assert c.usage.prompt_tokens == 5 and 0 < c.usage.completion_tokens <= 4


def test_logprobs_give_each_answer_token_and_its_top_alternatives(client):
    c = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=2)
    lp = c.choices[0].logprobs
    assert "".join(lp.tokens) == c.choices[0].text and len(lp.tokens) == c.usage.completion_tokens
    assert lp.text_offset[0] == len(PROMPT)
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert value <= 0 and top[token] == value and 1 <= len(top) <= 3
        assert value == pytest.approx(max(top.values()))   # temperature 0: the greedy token each time


def test_echo_with_max_tokens_0_scores_the_prompt(client):
    c = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
    choice = c.choices[0]
    assert choice.text == PROMPT and "".join(choice.logprobs.tokens) == PROMPT
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
    assert all(v < 0 for v in choice.logprobs.token_logprobs[1:])
    assert choice.logprobs.text_offset == [0, 3, 11, 14, 21]
    assert c.usage.completion_tokens == 0 and choice.finish_reason == "length"


def test_streaming_gives_the_same_text_as_a_whole_answer(client):
    whole = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=6, temperature=0)
    chunks = list(client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=6, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_routed_completion_and_unknown_model(client):
    raw = client.completions.with_raw_response.create(model="conclave-auto", prompt="Give me one fact about facts.",
                                                      max_tokens=4, temperature=0)
    assert raw.headers["x-conclave-expert"] == "gemma-3-270m" and raw.parse().model == "gemma-3-270m"
    assert raw.parse().to_dict()["conclave"]["route"]["router"] == "declared"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-expert", prompt="hi", max_tokens=1)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="smollm2", prompt="hi", max_tokens=1, best_of=2)
    assert bad.value.body["param"] == "best_of"


def lm_eval_loglikelihood(base: str, prompt, ctxlen: int) -> tuple[float, bool]:
    """lm-evaluation-harness's local-completions: its loglikelihood payload, sent as it sends it, and its
    parse_logprobs (lm_eval/models/openai_completions.py)."""
    payload = {"model": "smollm2", "prompt": [prompt], "temperature": 0, "max_tokens": 1, "logprobs": 1,
               "seed": 1234, "echo": True}
    out = httpx.post(base + "/v1/completions", json=payload, timeout=120).json()
    choice = sorted(out["choices"], key=lambda c: c["index"])[0]
    token_logprobs = choice["logprobs"]["token_logprobs"][ctxlen:-1]
    top_logprobs = choice["logprobs"]["top_logprobs"][ctxlen:-1]
    greedy = all(tok == max(top.values()) for tok, top in zip(token_logprobs, top_logprobs))
    return sum(token_logprobs), greedy


def test_lm_eval_loglikelihood_request_scores_continuations(gateway):
    base, ctx = gateway[0], PROMPT
    ctxlen = len(httpx.post(base + "/v1/completions", json={"model": "smollm2", "prompt": ctx, "max_tokens": 0,
                                                            "echo": True, "logprobs": 0}, timeout=120)
                 .json()["choices"][0]["logprobs"]["tokens"])
    paris, paris_greedy = lm_eval_loglikelihood(base, ctx + " Paris", ctxlen)
    london, london_greedy = lm_eval_loglikelihood(base, ctx + " London", ctxlen)
    assert math.isfinite(paris) and paris > london and paris_greedy and not london_greedy


def test_token_id_prompts_score_as_their_text(gateway):
    from llama_cpp import Llama

    from experts_registry.bundled import BUNDLED, resolve_gguf

    vocab = Llama(model_path=str(resolve_gguf(BUNDLED["smollm2"].model, Path(gateway[1]))), vocab_only=True,
                  verbose=False)
    ids = vocab.tokenize(PROMPT.encode(), add_bos=False)
    by_ids = httpx.post(gateway[0] + "/v1/completions", json={"model": "smollm2", "prompt": [ids], "max_tokens": 0,
                                                              "echo": True, "logprobs": 1}, timeout=120).json()
    by_text = httpx.post(gateway[0] + "/v1/completions", json={"model": "smollm2", "prompt": PROMPT, "max_tokens": 0,
                                                               "echo": True, "logprobs": 1}, timeout=120).json()
    assert by_ids["choices"][0]["logprobs"] == by_text["choices"][0]["logprobs"]
    assert by_ids["choices"][0]["text"] == PROMPT


def test_prompt_logprobs_match_llama_cpp_pythons_own(client, gateway):
    """Gemma (a model that adds BOS): our scoring against llama-cpp-python's logits_all=True echo."""
    from llama_cpp import Llama

    from experts_registry.bundled import BUNDLED, resolve_gguf

    ours = client.completions.create(model="gemma-3-270m", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
    llm = Llama(model_path=str(resolve_gguf(BUNDLED["gemma-3-270m"].model, Path(gateway[1]))), n_ctx=64,
                logits_all=True, n_threads=2, verbose=False)
    ref = llm.create_completion(PROMPT, max_tokens=1, temperature=0, echo=True, logprobs=1)["choices"][0]["logprobs"]
    llm.close()
    n = len(ours.choices[0].logprobs.tokens)
    assert ours.choices[0].logprobs.tokens == ref["tokens"][:n]
    assert ours.choices[0].logprobs.token_logprobs[0] is None and ref["token_logprobs"][0] is None
    assert ours.choices[0].logprobs.token_logprobs[1:] == pytest.approx([float(v) for v in ref["token_logprobs"][1:n]],
                                                                      abs=1e-3)


@pytest.mark.skipif(not redis_available(), reason="needs Redis")
def test_logprobs_and_refusals_travel_through_the_redis_queue(redis_prefix, tmp_path):
    from experts_registry.bundled import BUNDLED
    from experts_registry.errors import InvalidRequest
    from service.backends import GenParams, collect
    from service.core.completions import raw_messages
    from service.scheduler.redis_queue import RedisFront

    from .test_scheduler_redis import start_worker

    front, smollm2 = RedisFront(REDIS_URL, redis_prefix), BUNDLED["smollm2"]
    scoring = GenParams(raw=True, echo=True, logprobs=True, top_logprobs=1, max_tokens=0)
    w = start_worker("C", redis_prefix, tmp_path, kind="llamacpp")
    try:
        gen = asyncio.run(asyncio.wait_for(collect(front.stream(smollm2, raw_messages(PROMPT), scoring)), 60))
        with pytest.raises(InvalidRequest) as bad:
            asyncio.run(asyncio.wait_for(collect(front.stream(smollm2, raw_messages([10**7]), scoring)), 60))
    finally:
        w.kill()
        w.wait()
    assert gen.text == PROMPT and gen.logprobs[0]["logprob"] is None and len(gen.logprobs) == 5
    assert bad.value.param == "prompt" and "vocabulary" in bad.value.message


ODD = [  # (body fields, expected status)
    ({"model": "smollm2", "prompt": ""}, 400),                      # no BOS to start from
    ({"model": "gemma-3-270m", "prompt": "", "max_tokens": 2}, 200),  # a BOS is
    ({"model": "smollm2", "prompt": [0], "max_tokens": 2, "echo": True, "logprobs": 5}, 200),
    ({"model": "smollm2", "prompt": [[10**7]]}, 400),               # outside the vocabulary
    ({"model": "smollm2", "prompt": "é漢字 🙂", "max_tokens": 3, "echo": True, "logprobs": 5}, 200),
    ({"model": "smollm2", "prompt": "<|im_start|>user\nhi<|im_end|>", "max_tokens": 2, "logprobs": 0}, 200),
    ({"model": "smollm2", "prompt": "word " * 3000, "max_tokens": 1}, 400),   # longer than the context
    ({"model": "smollm2", "prompt": ["a", "b"], "max_tokens": 2, "stop": ["\n"], "logprobs": 1}, 200),
]


@pytest.mark.parametrize("fields, status", ODD)
def test_odd_prompts_get_an_answer_or_a_400_never_a_5xx(gateway, fields, status):
    r = httpx.post(gateway[0] + "/v1/completions", json=fields, timeout=120)
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["param"] == "prompt"
    else:
        for c in r.json()["choices"]:
            lp = c["logprobs"]
            assert lp is None or len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"])
