"""The expert record and both stores (embedded SQLite and real Redis), same behaviour."""

from __future__ import annotations

import json
import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor

import pytest

from experts_registry import BUNDLED, offer_bundled, open_store, resolve_gguf
from experts_registry.errors import ExpertExists, ExpertNotFound, ExpertUnavailable, ValidationFailed
from experts_registry.model import Expert

from .conftest import REDIS_URL, fake_expert


def test_expert_round_trips_through_json():
    e = Expert(name="qwen-7b.v2", backend="litellm", model="hosted_vllm/qwen", api_base="http://10.0.0.5:8000/v1",
               api_key_env="QWEN_KEY", skills=("Math", " code "), params_b=7, price_per_mtok=0.2,
               stop=("\n\n",), memory_mb=15000, system_prompt="Be brief.")
    again = Expert.from_json(e.to_json())
    assert again == e
    assert again.skills == ("math", "code")
    assert json.loads(e.to_json())["stop"] == ["\n\n"]


@pytest.mark.parametrize("name", ["", "Upper", "has space", "-dash-first", "a" * 65, "conclave-auto", "x/y"])
def test_bad_names_are_refused(name):
    with pytest.raises(ValidationFailed) as err:
        Expert(name=name, backend="litellm", model="m")
    assert err.value.param == "name"


@pytest.mark.parametrize("field,value,param", [
    ("backend", "ollama", "backend"), ("prompt_style", "fancy", "prompt_style"),
    ("template", "no placeholder", "template"), ("params_b", -1, "params_b"),
    ("context_length", 10, "context_length"), ("api_key_env", "sk-secret-value", "api_key_env"),
])
def test_bad_fields_are_refused_with_the_field_named(field, value, param):
    kw = {"name": "e", "backend": "litellm", "model": "m", field: value}
    with pytest.raises(ValidationFailed) as err:
        Expert(**kw)
    assert err.value.param == param


def test_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(ValidationFailed, match="unknown expert field"):
        Expert.from_dict({"name": "e", "backend": "litellm", "model": "m", "api_secret": "x"})
    with pytest.raises(ValidationFailed, match="'model' is required"):
        Expert.from_dict({"name": "e", "backend": "litellm"})


def test_store_add_get_list_remove(store):
    a, b = fake_expert("bravo"), fake_expert("alpha", skills=("math",))
    store.add(a)
    store.add(b)
    assert [e.name for e in store.list()] == ["alpha", "bravo"]
    assert store.get("alpha") == b
    store.remove("alpha")
    with pytest.raises(ExpertNotFound):
        store.get("alpha")
    with pytest.raises(ExpertNotFound):
        store.remove("alpha")
    assert [e.name for e in store.list()] == ["bravo"]


def test_name_collision_is_an_error_unless_replace(store):
    store.add(fake_expert("x", skills=("one",)))
    with pytest.raises(ExpertExists, match="--replace"):
        store.add(fake_expert("x", skills=("two",)))
    assert store.get("x").skills == ("one",)
    store.add(fake_expert("x", skills=("two",)), replace=True)
    assert store.get("x").skills == ("two",)


def test_claim_is_true_exactly_once(store):
    assert store.claim("flag") is True
    assert store.claim("flag") is False


def test_concurrent_writers_lose_nothing(store):
    names = [f"e{i:03d}" for i in range(120)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: store.add(fake_expert(n)), names))
    assert [e.name for e in store.list()] == names


def test_concurrent_same_name_adds_have_exactly_one_winner(store):
    def attempt(i):
        try:
            store.add(fake_expert("contested", skills=(f"s{i}",)))
            return True
        except ExpertExists:
            return False
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(16)))
    assert results.count(True) == 1


def _process_writer(args):
    kind, location, prefix, start = args
    s = open_store(location, REDIS_URL if kind == "redis" else None, prefix=prefix)
    for i in range(start, start + 25):
        s.add(fake_expert(f"p{i:03d}"))
    return start


def test_processes_writing_at_once_lose_nothing(store, tmp_path):
    kind = "redis" if store.describe().startswith("redis") else "sqlite"
    location = store.path.parent if kind == "sqlite" else tmp_path
    prefix = getattr(store, "prefix", "conclave:")
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_process_writer, [(kind, location, prefix, s) for s in (0, 25, 50, 75)])
    assert len(store.list()) == 100


def test_records_survive_reopening(store, tmp_path):
    store.add(fake_expert("kept"))
    if store.describe().startswith("redis"):
        again = open_store(tmp_path, REDIS_URL, prefix=store.prefix)
    else:
        again = open_store(store.path.parent)
    assert again.get("kept") == fake_expert("kept")


def test_bundled_experts_are_offered_once_and_removal_sticks(store):
    assert sorted(offer_bundled(store)) == ["gemma-3-270m", "smollm2"]
    store.remove("gemma-3-270m")
    assert offer_bundled(store) == []
    assert [e.name for e in store.list()] == ["smollm2"]


def test_unreachable_redis_is_a_clear_config_error(tmp_path):
    from experts_registry.errors import ConfigError

    with pytest.raises(ConfigError, match="unset it to use the embedded store") as err:
        open_store(tmp_path, "redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in err.value.message


def test_bundled_models_resolve_from_their_packages(tmp_path):
    smol = resolve_gguf(BUNDLED["smollm2"].model, tmp_path)
    assert smol.suffix == ".gguf" and smol.stat().st_size > 50_000_000
    gemma = resolve_gguf(BUNDLED["gemma-3-270m"].model, tmp_path)
    assert gemma.parent == tmp_path / "models" and gemma.stat().st_size > 200_000_000
    assert resolve_gguf(BUNDLED["gemma-3-270m"].model, tmp_path) == gemma  # assembled once


def test_missing_gguf_path_is_unavailable(tmp_path):
    with pytest.raises(ExpertUnavailable, match="does not exist"):
        resolve_gguf(str(tmp_path / "nope.gguf"), tmp_path)
