"""/v1/completions to a remote OpenAI-compatible expert (tests/fake_upstream.py in a subprocess), with the
official ``openai`` client on the gateway: the lean client passes prompt, echo and logprobs through and
returns the upstream's logprobs; the litellm path runs raw prompts and refuses echo / logprobs."""

from __future__ import annotations

import openai
import pytest

from experts_registry import open_store
from experts_registry.model import Expert
from service.backends import BackendPool
from service.core.config import load_settings
from service.pipeline.gateway import Gateway

from .servers import start_fake_upstream

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def upstream():
    proc, base = start_fake_upstream()
    yield base
    proc.kill()


def sdk(upstream, tmp_path, client_for, lean: bool) -> openai.OpenAI:
    settings = load_settings().with_(expert_timeout=5.0, lean_client=lean)
    store = open_store(tmp_path / "remote")
    store.add(Expert(name="remote", backend="litellm", model="openai/ok", api_base=upstream + "/v1",
                     prompt_style="chat", stop=("\nQ:",)))
    http = client_for(Gateway(settings, store, BackendPool(settings)))
    return openai.OpenAI(base_url=str(http.base_url) + "/v1", api_key="unused", http_client=http, max_retries=0)


def test_lean_client_passes_echo_and_logprobs_through(upstream, tmp_path, client_for):
    client = sdk(upstream, tmp_path, client_for, lean=True)
    c = client.completions.create(model="remote", prompt="Say it", max_tokens=5, echo=True, logprobs=1)
    assert c.choices[0].text == "Say itupstream ok"
    lp = c.choices[0].logprobs
    assert lp.tokens == ["Say", " it", "upstream", " ok"] and lp.token_logprobs == [None, -0.5, -0.5, -0.5]
    assert lp.top_logprobs[0] is None and lp.top_logprobs[2] == {"upstream": -0.5} and lp.text_offset[2] == 6
    plain = client.completions.create(model="remote", prompt="Say it", max_tokens=5)
    assert plain.choices[0].text == "upstream ok" and plain.choices[0].logprobs is None
    assert plain.usage.completion_tokens == 2


def test_lean_client_streams_a_completion_with_logprobs(upstream, tmp_path, client_for):
    client = sdk(upstream, tmp_path, client_for, lean=True)
    chunks = list(client.completions.create(model="remote", prompt="Say it", max_tokens=5, logprobs=0, stream=True))
    texts = [ch.choices[0].text for ch in chunks if ch.choices]
    assert "".join(texts) == "upstream ok"
    with_lp = [ch.choices[0].logprobs for ch in chunks if ch.choices and ch.choices[0].logprobs]
    assert with_lp and with_lp[0].tokens == ["upstream", " ok"] and with_lp[0].text_offset == [6, 14]


def test_litellm_runs_raw_prompts_and_refuses_scoring(upstream, tmp_path, client_for):
    client = sdk(upstream, tmp_path, client_for, lean=False)
    c = client.completions.create(model="remote", prompt="Say it", max_tokens=5)
    assert c.choices[0].text == "upstream ok"
    for field, kw in (("logprobs", {"logprobs": 1}), ("echo", {"echo": True})):
        with pytest.raises(openai.BadRequestError) as bad:
            client.completions.create(model="remote", prompt="Say it", max_tokens=5, **kw)
        assert bad.value.body["param"] == field and "remote" in bad.value.body["message"]
