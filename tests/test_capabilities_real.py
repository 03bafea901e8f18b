"""Capabilities against the real parts: the bundled llama.cpp expert honours JSON mode and logprobs
through the gateway's pipeline and through the Redis queue's worker process, and the real server
refuses what it cannot serve (official openai client)."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import openai
import pytest

from experts_registry.bundled import BUNDLED
from experts_registry.errors import InvalidRequest
from service.backends import GenParams, collect

from .conftest import REDIS_URL
from .servers import running_gateway

pytestmark = pytest.mark.real
SMOL = BUNDLED["smollm2"]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "is_capital": {"type": "boolean"}},
          "required": ["city", "is_capital"]}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
ASK = [{"role": "user", "content": "What is the largest city of France? Answer in JSON."}]
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "today's weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]


def check_json_and_logprobs(gen_json, gen_logprobs) -> None:
    jsonschema.validate(json.loads(gen_json.text), SCHEMA)
    entries = gen_logprobs.logprobs
    assert entries and len(entries) == gen_logprobs.usage["completion_tokens"]
    assert "".join(e["token"] for e in entries) == gen_logprobs.text
    assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in entries)


def test_pipeline_json_schema_and_logprobs_with_the_bundled_expert(tmp_path):
    from experts_registry import open_store
    from service.backends import BackendPool
    from service.core.config import load_settings
    from service.pipeline.gateway import Gateway

    settings = load_settings().with_(home=tmp_path, llama_threads=1)
    gw = Gateway(settings, open_store(tmp_path / "store"), BackendPool(settings))

    async def main():
        try:
            as_json = await collect(gw.call(SMOL, ASK, GenParams(max_tokens=40, temperature=0, response_format=JSON_FORMAT)))
            scored = await collect(gw.call(SMOL, ASK, GenParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)))
            return as_json, scored
        finally:
            await gw.backends.close()

    check_json_and_logprobs(*asyncio.run(main()))


def test_redis_queue_worker_process_carries_json_logprobs_and_refusals(redis_prefix, tmp_path):
    from service.scheduler.redis_queue import RedisFront

    from .test_scheduler_redis import start_worker

    front = RedisFront(REDIS_URL, redis_prefix)
    worker = start_worker("caps", redis_prefix, tmp_path, kind="llamacpp")

    async def main():
        ask = lambda params: asyncio.wait_for(collect(front.stream(SMOL, ASK, params)), 90)  # noqa: E731
        as_json = await ask(GenParams(max_tokens=40, temperature=0, response_format=JSON_FORMAT))
        scored = await ask(GenParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=2))
        with pytest.raises(InvalidRequest) as err:
            await ask(GenParams(max_tokens=4, tools=TOOLS))
        return as_json, scored, err.value

    try:
        as_json, scored, refused = asyncio.run(main())
    finally:
        worker.kill()
        worker.wait()
    check_json_and_logprobs(as_json, scored)
    assert refused.param == "tools" and refused.status == 400


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    home = tmp_path_factory.mktemp("caps-home")
    with running_gateway(home, home / "server.log", CONCLAVE_ROUTER="tags") as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("model", ["smollm2", "conclave-auto"])
def test_tools_to_the_bundled_experts_are_refused_naming_the_field(client, model):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=8)
    body = err.value.body
    assert err.value.status_code == 400 and body["param"] == "tools" and body["type"] == "invalid_request_error"
    assert "smollm2" in body["message"] and "tools" in body["message"]


def test_an_image_part_to_a_text_expert_is_refused(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2", messages=IMAGE, max_tokens=8)
    assert err.value.body["param"] == "messages" and "image" in err.value.body["message"]


def test_openai_client_json_schema_and_logprobs_from_the_bundled_expert(client):
    answer = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=40, temperature=0,
                                            response_format=JSON_FORMAT)
    jsonschema.validate(json.loads(answer.choices[0].message.content), SCHEMA)
    scored = client.chat.completions.create(model="conclave-auto", messages=ASK, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=2)
    content = scored.choices[0].logprobs.content
    assert content and len(content) == scored.usage.completion_tokens
    assert "".join(t.token for t in content) == scored.choices[0].message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
