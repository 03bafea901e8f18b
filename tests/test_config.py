"""Settings from CONCLAVE_* environment variables and conclave.yaml; conclave config show / validate."""

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from experts_registry.errors import ConfigError
from service.cli import main
from service.core.config import load_settings, resolve_settings, specs


def test_settings_from_environment_and_bad_values():
    s = load_settings({"CONCLAVE_HOME": "/tmp/x", "CONCLAVE_API_KEYS": "a, b,,", "CONCLAVE_EXPERT_TIMEOUT": "2.5",
                       "CONCLAVE_LLAMA_THREADS": "1"})
    assert s.api_keys == frozenset({"a", "b"}) and s.expert_timeout == 2.5 and s.llama_threads == 1
    with pytest.raises(ConfigError, match="CONCLAVE_MAX_BODY_BYTES must be an integer"):
        load_settings({"CONCLAVE_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ConfigError, match="CONCLAVE_EXPERT_TIMEOUT must be >= 0.001"):
        load_settings({"CONCLAVE_EXPERT_TIMEOUT": "0"})
    on = load_settings({"CONCLAVE_OTEL": "on", "CONCLAVE_LEAN_CLIENT": "off", "CONCLAVE_GENERALIST": "",
                        "CONCLAVE_SCHED_RELOAD_GAP": "0"})
    assert (on.otel, on.lean_client, on.generalist, on.sched_reload_gap) == (True, False, None, 0.0)
    with pytest.raises(ConfigError, match=r"CONCLAVE_OTEL must be one of 1/true/yes/on or 0/false/no/off \(got 'maybe'\)"):
        load_settings({"CONCLAVE_OTEL": "maybe"})
    with pytest.raises(ConfigError, match="CONCLAVE_SCHED_ADMISSION must be one of queue, bound"):
        load_settings({"CONCLAVE_SCHED_ADMISSION": "fifo"})


# --- conclave.yaml -------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ENV = {"CONCLAVE_EXAMPLE_REDIS_URL": "redis://:pw@127.0.0.1:6379/0", "CONCLAVE_EXAMPLE_USER_KEY": "sk-u",
               "CONCLAVE_EXAMPLE_ADMIN_KEY": "sk-a"}


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "conclave.yaml"
    path.write_text(text)
    return str(path)


def test_an_empty_file_and_a_file_of_every_default_give_the_defaults(tmp_path):
    env = {"CONCLAVE_HOME": "/tmp/h"}
    defaults = load_settings(env)
    assert load_settings({**env, "CONCLAVE_CONFIG": _write(tmp_path, "")}) == defaults
    spelled = {}   # every setting written out with its default value
    for spec in specs():
        value = getattr(defaults, spec.name)
        spelled.setdefault(spec.group, {})[spec.key] = sorted(value) if isinstance(value, frozenset) else (
            str(value) if isinstance(value, Path) else value)
    settings, sources = resolve_settings({**env, "CONCLAVE_CONFIG": _write(tmp_path, yaml.safe_dump(spelled))})
    assert settings == defaults
    assert set(sources.values()) == {f"file:{tmp_path / 'conclave.yaml'}", "env:CONCLAVE_HOME"}


def test_the_file_sets_values_and_the_environment_overrides_them(tmp_path):
    path = _write(tmp_path, "limits: {max_body_bytes: 5000, expert_timeout: 2}\naggregation: {k: 4}\n"
                            "keys:\n  api_keys: [sk-one, os.environ/MORE_KEYS]\nstore: {redis_url: os.environ/R}\n")
    env = {"CONCLAVE_CONFIG": path, "MORE_KEYS": "sk-two, sk-three", "R": "redis://:pw@h:6379/1",
           "CONCLAVE_MOE_K": "6"}
    s, sources = resolve_settings(env)
    assert (s.max_body_bytes, s.expert_timeout, s.moe_k) == (5000, 2.0, 6)
    assert s.api_keys == {"sk-one", "sk-two", "sk-three"} and s.redis_url == "redis://:pw@h:6379/1"
    assert sources["moe_k"] == "env:CONCLAVE_MOE_K" and sources["max_body_bytes"] == f"file:{path}"
    assert sources["redis_url"] == f"file:{path} (os.environ/R)" and sources["retries"] == "default"
    assert isinstance(s.expert_timeout, float)


def test_a_bad_file_stops_every_settings_reader_with_its_first_error(tmp_path):
    path = _write(tmp_path, "limits:\n  max_body_bytes: lots\n  max_mesages: 3\n")
    with pytest.raises(ConfigError, match=r"conclave.yaml:2: limits.max_body_bytes: must be an integer "
                                          r"\(got a string 'lots'\) \(and 1 more: conclave config validate"):
        load_settings({"CONCLAVE_CONFIG": path})
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_settings({"CONCLAVE_CONFIG": str(tmp_path / "missing.yaml")})
    queue = _write(tmp_path, "scheduler: {queue: redis}\n")
    with pytest.raises(ConfigError, match="needs a Redis: set store.redis_url or CONCLAVE_REDIS_URL"):
        load_settings({"CONCLAVE_CONFIG": queue})


def test_validate_reports_every_error_with_its_line_and_path(tmp_path, monkeypatch):
    monkeypatch.delenv("UNSET_SECRET", raising=False)
    path = _write(tmp_path, "server:\n  port: eighty\n  workrs: 2\nkeys:\n  admin_keys: [os.environ/UNSET_SECRET]\n"
                            "limits:\n  moe_k: 3\n  max_tokens_cap: 0\n  expert_timeout: true\nschedular: {}\n"
                            "scheduler:\n  queue: fifo\n")
    result = CliRunner().invoke(main, ["config", "validate", path])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(path)]
    assert [re.sub(r"^.*?:(\d+): ", r"\1 ", line) for line in lines] == [
        "2 server.port: must be an integer (got a string 'eighty')",
        "3 server.workrs: unknown setting (did you mean 'workers'?)",
        "5 keys.admin_keys: os.environ/UNSET_SECRET names an environment variable that is not set: export it, "
        "or write the value here",
        "7 limits.moe_k: unknown setting (did you mean aggregation.k?)",
        "8 limits.max_tokens_cap: must be >= 1 (got 0)",
        "9 limits.expert_timeout: must be a number (got a boolean True)",
        "10 schedular: unknown section (did you mean 'scheduler'?)",
        "12 scheduler.queue: must be one of local, redis (got 'fifo')",
    ]


def test_show_masks_secrets_and_names_each_source(tmp_path):
    path = _write(tmp_path, "store: {redis_url: os.environ/R}\nkeys: {admin_keys: [sk-admin-1, sk-admin-2]}\n")
    env = {"CONCLAVE_CONFIG": path, "R": "redis://:hunter2@127.0.0.1:6379/3", "CONCLAVE_API_KEYS": "sk-user"}
    result = CliRunner().invoke(main, ["config", "show", "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown_ = json.loads(result.output)
    assert shown_["store.redis_url"] == {"value": "redis://:****@127.0.0.1:6379/3",
                                         "source": f"file:{path} (os.environ/R)", "env": "CONCLAVE_REDIS_URL"}
    assert shown_["keys.admin_keys"]["value"] == "<2 secrets>" and shown_["keys.api_keys"]["value"] == "<1 secret>"
    assert shown_["keys.api_keys"]["source"] == "env:CONCLAVE_API_KEYS"
    assert shown_["limits.max_tokens_cap"] == {"value": 2048, "source": "default", "env": "CONCLAVE_MAX_TOKENS_CAP"}
    assert "hunter2" not in result.output and "sk-admin" not in result.output and "sk-user" not in result.output
    # --config sets CONCLAVE_CONFIG for this process (uvicorn's workers inherit it): restored after the run
    text = CliRunner().invoke(main, ["--config", path, "config", "show"], env={"R": env["R"], "CONCLAVE_CONFIG": None})
    assert text.exit_code == 0 and "hunter2" not in text.output
    assert re.search(r"redis_url: +\"redis://:\*\*\*\*@127.0.0.1:6379/3\" +# file:.*\(os.environ/R\)", text.output)


def test_validate_warns_about_a_literal_secret(tmp_path):
    path = _write(tmp_path, "keys: {api_keys: [sk-in-the-file]}\n")
    result = CliRunner().invoke(main, ["config", "validate", path])
    assert result.exit_code == 0 and "ok (1 setting set)" in result.output
    assert "warning: keys.api_keys holds a secret in the file" in result.output


def test_the_example_file_and_the_docs_example_validate(monkeypatch):
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    docs = (ROOT / "docs" / "configuration.md").read_text()
    block = docs.split("<!-- conclave.yaml example -->", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block.strip() == (ROOT / "conclave.example.yaml").read_text().strip()   # the docs show the file
    result = CliRunner().invoke(main, ["config", "validate", str(ROOT / "conclave.example.yaml")])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    s = load_settings({**EXAMPLE_ENV, "CONCLAVE_CONFIG": str(ROOT / "conclave.example.yaml")})
    assert s.workers == 2 and s.sched_queue == "redis" and s.admin_keys == {"sk-a"}


def test_every_setting_has_a_row_in_the_docs():
    docs = (ROOT / "docs" / "configuration.md").read_text()
    missing = [s.env for s in specs() if f"`{s.env}`" not in docs or f"`{s.path}`" not in docs]
    assert missing == []
