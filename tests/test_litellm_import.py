"""conclave experts import: a LiteLLM proxy config's model_list as experts (mapping, refusals, the real gateway)."""

from __future__ import annotations

import os
import subprocess

import httpx
import openai
import pytest
import yaml
from click.testing import CliRunner

from experts_registry import open_store
from experts_registry.litellm_import import plan_import
from service.cli import main

from .servers import CONCLAVE, running_gateway, start_fake_upstream

# LiteLLM's documented shape (docs.litellm.ai/docs/proxy/configs): model_list entries with model_name,
# litellm_params (model, api_base, api_key: os.environ/..., rpm, tpm) and model_info; proxy sections
LITELLM_CONFIG = """
model_list:
  - model_name: alpha
    litellm_params:
      model: openai/alpha
      api_base: {base}/v1
      api_key: os.environ/FAKE_UPSTREAM_KEY
      rpm: 480
    model_info:
      max_input_tokens: 8192
      input_cost_per_token: 0.0000001
      output_cost_per_token: 0.0000004
      supports_function_calling: true
  - model_name: Beta/Chat
    litellm_params:
      model: hosted_vllm/beta
      api_base: {base}/v1
      tpm: 100000
      temperature: 0.2
  - model_name: gamma
    litellm_params:
      model: custom_openai/gamma
      api_base: os.environ/GAMMA_API_BASE
      api_key: os.environ/FAKE_UPSTREAM_KEY
      timeout: 300
    model_info:
      max_tokens: 4096
      supports_vision: true
litellm_settings:
  num_retries: 3
general_settings:
  master_key: sk-1234
"""
ENV = {"FAKE_UPSTREAM_KEY": "sk-upstream", "GAMMA_API_BASE": "http://127.0.0.1:9/v1"}


def _config(base: str = "http://127.0.0.1:9") -> dict:
    return yaml.safe_load(LITELLM_CONFIG.format(base=base))


def test_the_documented_shape_maps_to_three_experts_with_a_line_per_key_left_out():
    plan = plan_import(_config(), ENV, "lite.yaml")
    assert plan.refused == []
    alpha, beta, gamma = plan.experts
    assert (alpha.name, alpha.backend, alpha.model, alpha.api_base, alpha.api_key_env) == (
        "alpha", "litellm", "openai/alpha", "http://127.0.0.1:9/v1", "FAKE_UPSTREAM_KEY")
    assert alpha.context_length == 8192 and alpha.price_per_mtok == pytest.approx(0.1)
    assert (beta.name, beta.api_key_env) == ("beta-chat", None)
    assert gamma.api_base == "http://127.0.0.1:9/v1" and gamma.context_length == 4096
    assert (alpha.capabilities, beta.capabilities) == (("tools", "json_schema", "logprobs", "reasoning"), None)
    assert "vision" in gamma.capabilities
    lines = [n.line() for n in plan.notes]
    for expected in ("model_list[0] (alpha): litellm_params.rpm: not mapped: Conclave limits requests per API key",
                     "model_list[0] (alpha): model_info.output_cost_per_token: not mapped",
                     "model_list[0] (alpha): model_info: capabilities tools, json_schema, logprobs, reasoning (from supports_function_calling)",
                     "model_list[1] (Beta/Chat): model_name: the expert is named 'beta-chat'",
                     "model_list[1] (Beta/Chat): litellm_params.tpm: not mapped",
                     "model_list[1] (Beta/Chat): litellm_params.temperature: not mapped",
                     "model_list[2] (gamma): litellm_params.timeout: not mapped: one timeout for every expert",
                     "model_list[2] (gamma): model_info.max_tokens: context_length is 4096",
                     "model_list[2] (gamma): model_info: capabilities tools, json_schema, vision, logprobs, reasoning (from supports_vision)",
                     "lite.yaml: litellm_settings: not imported", "lite.yaml: general_settings: not imported"):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert len(lines) == 11 and "sk-1234" not in "\n".join(lines)


@pytest.mark.parametrize("params, key, why", [
    ({"api_key": "sk-live-abc"}, "litellm_params.api_key", "a literal key: Conclave stores only the name"),
    ({"api_key": "os.environ/lower_case"}, "litellm_params.api_key", "is not an environment variable name"),
    ({"api_base": "http://169.254.169.254/v1"}, "litellm_params.api_base", "link-local or cloud-metadata"),
    ({"api_base": "file:///etc/passwd"}, "litellm_params.api_base", "must be an http(s) URL"),
    ({"api_base": "os.environ/UNSET_BASE"}, "litellm_params.api_base", "names an environment variable that is not set"),
    ({"model": "openai/*"}, "litellm_params.model", "a wildcard route"),
])
def test_an_entry_that_cannot_be_imported_is_refused_by_entry_and_key(params, key, why):
    entry = {"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "http://127.0.0.1:9/v1", **params}}
    plan = plan_import({"model_list": [entry]}, {}, "f.yaml")
    assert plan.experts == [] and len(plan.refused) == 1
    note = plan.refused[0]
    assert (note.entry, note.key) == ("model_list[0] (m)", key) and why in note.why
    assert "sk-live-abc" not in note.line()


def test_duplicate_names_modes_and_a_missing_model_list_are_refused():
    dup = {"model_list": [{"model_name": "gpt-4", "litellm_params": {"model": "azure/a"}},
                          {"model_name": "gpt-4", "litellm_params": {"model": "azure/b"}},
                          {"model_name": "emb", "litellm_params": {"model": "openai/e"},
                           "model_info": {"mode": "embedding"}},
                          {"model_name": "conclave-x", "litellm_params": {"model": "openai/x"}},
                          {"litellm_params": {"model": "openai/y"}}]}
    plan = plan_import(dup, {})
    assert [e.name for e in plan.experts] == ["gpt-4"]
    assert [(n.entry, n.key) for n in plan.refused] == [
        ("model_list[1] (gpt-4)", "model_name"), ("model_list[2] (emb)", "model_info.mode"),
        ("model_list[3] (conclave-x)", "model_name"), ("model_list[4] (None)", "model_name")]
    assert "load-balances" in plan.refused[0].why
    assert plan_import({"general_settings": {}}, {}).refused[0].key == "model_list"
    unsafe = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m",
                                                                     "api_base": "http://169.254.169.254"}}]}
    assert plan_import(unsafe, {}, allow_unsafe=True).experts[0].api_base == "http://169.254.169.254"


def test_the_cli_dry_run_prints_and_registers_nothing_and_a_refusal_registers_nothing(tmp_path, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / "lite.yaml"
    path.write_text(LITELLM_CONFIG.format(base="http://127.0.0.1:9"))
    runner = CliRunner()
    dry = runner.invoke(main, ["experts", "import", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert ("would add 'alpha' (openai/alpha at http://127.0.0.1:9/v1, key from $FAKE_UPSTREAM_KEY; "
            "lean OpenAI client)") in dry.output
    assert dry.output.count("would add") == 3 and dry.output.count("note: ") == 11

    def names() -> set[str]:   # the registry in conftest's CONCLAVE_HOME
        return {e.name for e in open_store(tmp_path / "home").list()}

    assert not names() & {"alpha", "beta-chat", "gamma"}
    literal = path.read_text().replace("api_key: os.environ/FAKE_UPSTREAM_KEY\n      rpm", "api_key: sk-x\n      rpm")
    path.write_text(literal)
    refused = runner.invoke(main, ["experts", "import", str(path)])
    assert refused.exit_code == 1
    assert "refused: model_list[0] (alpha): litellm_params.api_key: a literal key" in refused.output
    assert "1 refused: nothing was registered" in refused.output and "sk-x" not in refused.output
    assert not names() & {"alpha", "beta-chat", "gamma"}
    partial = runner.invoke(main, ["experts", "import", str(path), "--skip-refused"])
    assert partial.exit_code == 0 and names() >= {"beta-chat", "gamma"} and "alpha" not in names()
    again = runner.invoke(main, ["experts", "import", str(path), "--skip-refused"])
    assert "refused: expert 'beta-chat': model_name: an expert of this name is registered" in again.output


@pytest.mark.real
def test_three_imported_experts_answer_through_the_real_gateway(tmp_path):
    upstream, base = start_fake_upstream()
    try:
        env = {**ENV, "GAMMA_API_BASE": base + "/v1", "CONCLAVE_HOME": str(tmp_path / "home")}
        path = tmp_path / "litellm-config.yaml"
        path.write_text(LITELLM_CONFIG.format(base=base))
        done = subprocess.run([CONCLAVE, "experts", "import", str(path)], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "registered 3 experts" in done.stdout
        with running_gateway(tmp_path / "home", tmp_path / "server.log", **ENV) as gw:
            client = openai.OpenAI(base_url=gw + "/v1", api_key="unused", max_retries=0, timeout=60)
            listed = {m.id for m in client.models.list().data}
            assert {"alpha", "beta-chat", "gamma"} <= listed
            for name in ("alpha", "beta-chat", "gamma"):
                reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
                assert reply.choices[0].message.content == "upstream ok"
            stream = client.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "hi"}],
                                                    stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "upstream ok"
        seen = httpx.get(base).json()["seen"]   # the upstream got each model's own name
        assert seen["alpha"] == 1 and seen["beta"] == 1 and seen["gamma"] == 2
    finally:
        upstream.kill()
