"""Settings, read once from the environment (``CONCLAVE_*``) into a frozen value."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from experts_registry.errors import ConfigError

VIRTUAL_AUTO = "conclave-auto"
VIRTUAL_MOE = "conclave-moe"


def default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("conclave", appauthor=False))


@dataclass(frozen=True)
class Settings:
    home: Path
    redis_url: str | None = None
    redis_prefix: str = "conclave:"
    api_keys: frozenset[str] = field(default_factory=frozenset)
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    max_tokens_cap: int = 2048
    default_max_tokens: int = 256
    expert_timeout: float = 120.0
    router: str = "tags"
    generalist: str | None = "smollm2"
    max_loaded_models: int = 2
    moe_k: int = 3
    moe_aggregator: str = "vote"
    aggregator_expert: str | None = None
    llama_threads: int | None = None

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


def _number(env, name: str, default, cast=int, minimum=1):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {'an integer' if cast is int else 'a number'} (got {raw!r})") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum} (got {value})")
    return value


def load_settings(env: dict | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env["CONCLAVE_HOME"]).expanduser() if env.get("CONCLAVE_HOME") else default_home()
    keys = frozenset(k.strip() for k in env.get("CONCLAVE_API_KEYS", "").split(",") if k.strip())
    return Settings(
        home=home,
        redis_url=env.get("CONCLAVE_REDIS_URL") or None,
        redis_prefix=env.get("CONCLAVE_REDIS_PREFIX", "conclave:"),
        api_keys=keys,
        max_body_bytes=_number(env, "CONCLAVE_MAX_BODY_BYTES", 1_000_000),
        max_messages=_number(env, "CONCLAVE_MAX_MESSAGES", 256),
        max_tokens_cap=_number(env, "CONCLAVE_MAX_TOKENS_CAP", 2048),
        default_max_tokens=_number(env, "CONCLAVE_DEFAULT_MAX_TOKENS", 256),
        expert_timeout=_number(env, "CONCLAVE_EXPERT_TIMEOUT", 120.0, float, 0.001),
        router=env.get("CONCLAVE_ROUTER", "tags"),
        generalist=env.get("CONCLAVE_GENERALIST", "smollm2") or None,
        max_loaded_models=_number(env, "CONCLAVE_MAX_LOADED_MODELS", 2),
        moe_k=_number(env, "CONCLAVE_MOE_K", 3),
        moe_aggregator=env.get("CONCLAVE_MOE_AGGREGATOR", "vote"),
        aggregator_expert=env.get("CONCLAVE_AGGREGATOR_EXPERT") or None,
        llama_threads=_number(env, "CONCLAVE_LLAMA_THREADS", None),
    )
