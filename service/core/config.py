"""Settings, read once into a frozen value: defaults < ``conclave.yaml`` (CONCLAVE_CONFIG) < ``CONCLAVE_*``.

Each field's ``setting(...)`` names its variable, its group and key in the file and its bounds
(``config_schema.py``); the file is read by ``config_file.py``.  This is the one place that reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from experts_registry.errors import ConfigError

from .config_schema import BadValue, Spec, parse_text, setting, specs_of

VIRTUAL_AUTO = "conclave-auto"
VIRTUAL_MOE = "conclave-moe"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("conclave", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Every setting: its default, ``CONCLAVE_*`` variable and place in ``conclave.yaml`` (docs/configuration.md)."""

    home: Path = setting(group="store", env="HOME")   # None here: load_settings() puts default_home()
    host: str = setting("127.0.0.1", group="server", env="HOST")     # conclave serve --host
    port: int = setting(8000, group="server", env="PORT", minimum=0)
    workers: int = setting(1, group="server", env="WORKERS")         # uvicorn server processes
    log_level: str = setting("info", group="server", env="LOG_LEVEL", choices=LOG_LEVELS)
    shutdown_grace: float = setting(30.0, group="server", env="SHUTDOWN_GRACE", minimum=0)
    keepalive_seconds: int = setting(75, group="server", env="KEEPALIVE_SECONDS")  # idle keep-alive (uvicorn: 5)
    otel: bool = setting(False, group="server", env="OTEL")   # FastAPI's native OpenTelemetry on the routes
    lean_client: bool = setting(True, group="server", env="LEAN_CLIENT")   # OpenAI-compatible litellm experts: aiohttp
    expert_cache_seconds: float = setting(2.0, group="server", env="EXPERT_CACHE_SECONDS", minimum=0)
    allow_unsafe_upstreams: bool = setting(False, group="server", env="ALLOW_UNSAFE_UPSTREAMS")
    redis_url: str | None = setting(None, group="store", env="REDIS_URL", secret=True)
    redis_prefix: str = setting("conclave:", group="store", env="REDIS_PREFIX")
    allow_volatile_redis: bool = setting(False, group="store", env="ALLOW_VOLATILE_REDIS")  # Redis without AOF/RDB
    router: str | None = setting(None, group="router", env="ROUTER", key="name")  # None: 'correct' once trained
    generalist: str | None = setting("smollm2", group="router", env="GENERALIST")
    keyword_expert: str | None = setting(None, group="router", env="KEYWORD_EXPERT")
    keyword_samples: int = setting(5, group="router", env="KEYWORD_SAMPLES")
    retries: int = setting(2, group="router", env="RETRIES", minimum=0)
    fallbacks: int = setting(2, group="router", env="FALLBACKS", minimum=0)
    breaker_failures: int = setting(3, group="router", env="BREAKER_FAILURES")
    breaker_cooldown: float = setting(30.0, group="router", env="BREAKER_COOLDOWN", minimum=0)
    moe_k: int = setting(3, group="aggregation", env="MOE_K", key="k")
    moe_aggregator: str = setting("vote", group="aggregation", env="MOE_AGGREGATOR", key="aggregator")
    aggregator_expert: str | None = setting(None, group="aggregation", env="AGGREGATOR_EXPERT", key="expert")
    max_body_bytes: int = setting(1_000_000, group="limits", env="MAX_BODY_BYTES")
    max_messages: int = setting(256, group="limits", env="MAX_MESSAGES")
    max_tokens_cap: int = setting(2048, group="limits", env="MAX_TOKENS_CAP")
    default_max_tokens: int = setting(256, group="limits", env="DEFAULT_MAX_TOKENS")
    expert_timeout: float = setting(120.0, group="limits", env="EXPERT_TIMEOUT", minimum=0.001)
    api_keys: frozenset[str] = setting(group="keys", env="API_KEYS", secret=True, factory=frozenset)
    admin_keys: frozenset[str] = setting(group="keys", env="ADMIN_KEYS", secret=True, factory=frozenset)
    key_cache_seconds: float = setting(5.0, group="keys", env="KEY_CACHE_SECONDS", key="cache_seconds", minimum=0)
    # env vars HTTP-registered experts may name as api_key_env
    expert_secrets: frozenset[str] = setting(group="keys", env="EXPERT_SECRETS", factory=frozenset)
    max_loaded_models: int = setting(2, group="scheduler", env="MAX_LOADED_MODELS")
    worker_memory_mb: int | None = setting(None, group="scheduler", env="WORKER_MEMORY_MB")
    llama_threads: int | None = setting(None, group="scheduler", env="LLAMA_THREADS")
    # vLLM GPU worker: pinned host memory for level-1 sleepers (None: half the memory available at start)
    vllm_host_memory_mb: float | None = setting(None, group="scheduler", env="VLLM_HOST_MEMORY_MB", minimum=0)
    vllm_max_sleeping: int = setting(4, group="scheduler", env="VLLM_MAX_SLEEPING", minimum=0)   # then shut down
    sched_workers: int = setting(1, group="scheduler", env="SCHED_WORKERS", key="workers")
    sched_max_batch: int = setting(8, group="scheduler", env="SCHED_MAX_BATCH", key="max_batch")
    sched_max_wait: float = setting(10.0, group="scheduler", env="SCHED_MAX_WAIT", key="max_wait", minimum=0.001)
    sched_queue_per_expert: int = setting(64, group="scheduler", env="SCHED_QUEUE_PER_EXPERT", key="queue_per_expert")
    sched_queue_total: int = setting(256, group="scheduler", env="SCHED_QUEUE_TOTAL", key="queue_total")
    # None: the wait bound (one load per expert per batch window)
    sched_reload_gap: float | None = setting(None, group="scheduler", env="SCHED_RELOAD_GAP", key="reload_gap",
                                             minimum=0)
    # "queue": queue-size bounds only; "bound": also refuse past the wait bound
    sched_admission: str = setting("queue", group="scheduler", env="SCHED_ADMISSION", key="admission",
                                   choices=("queue", "bound"))
    sched_queue: str = setting("local", group="scheduler", env="SCHED_QUEUE", key="queue", choices=("local", "redis"))
    # Redis queue: "affinity" (placement table, per-expert streams) or "shared"
    sched_cluster: str = setting("affinity", group="scheduler", env="SCHED_CLUSTER", key="cluster",
                                 choices=("affinity", "shared"))
    # a replica when an expert's queued work per holder > this * max_wait
    sched_replica_fraction: float = setting(0.5, group="scheduler", env="SCHED_REPLICA_FRACTION",
                                            key="replica_fraction", minimum=0.001)
    # seconds the Redis queue keeps answers (exactly-once marks, Idempotency-Key answers)
    sched_answer_ttl: int = setting(3600, group="scheduler", env="SCHED_ANSWER_TTL", key="answer_ttl", minimum=60)
    ui_decisions: int = setting(200, group="server", env="UI_DECISIONS", minimum=0)   # dashboard's decision ring
    ui_show_prompts: bool = setting(False, group="server", env="UI_SHOW_PROMPTS")   # else a keyed hash + length

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


def specs() -> tuple[Spec, ...]:
    """The schema: one row per setting (variable, group and key in the file, bounds)."""
    return specs_of(Settings)


def load_settings(env: dict | None = None) -> Settings:
    """Defaults, then the file named by CONCLAVE_CONFIG (if any), then CONCLAVE_* variables."""
    return resolve_settings(env)[0]


def resolve_settings(env=None) -> tuple[Settings, dict[str, str]]:
    """The settings and where each came from: ``default``, ``file:PATH`` or ``env:NAME``."""
    env = os.environ if env is None else env
    rows = specs()
    values, sources = _from_file(env.get("CONCLAVE_CONFIG"), rows, env)
    for spec in rows:
        raw = env.get(spec.env)
        if raw or (raw == "" and spec.optional and spec.kind == "str"):   # empty text: 'none'
            try:
                values[spec.name] = parse_text(spec, raw)
            except BadValue as exc:
                raise ConfigError(f"{spec.env} {exc.reason}") from None
            sources[spec.name] = f"env:{spec.env}"
    values.setdefault("home", None)
    if values["home"] is None:
        values["home"] = default_home()
    settings = Settings(**values)
    _check_together(settings, sources)
    return settings, {s.name: sources.get(s.name, "default") for s in rows}


def _from_file(path: str | None, rows, env) -> tuple[dict, dict]:
    if not path:
        return {}, {}
    from .config_file import read_config

    found = read_config(path, rows, env)
    if found.errors:
        n = len(found.errors)
        raise ConfigError(found.errors[0] + (f" (and {n - 1} more: conclave config validate {path})" if n > 1 else ""))
    return found.values, found.sources


def _check_together(s: Settings, sources: dict[str, str]) -> None:
    if s.sched_queue == "redis" and not s.redis_url:
        raise ConfigError(f"the Redis queue (scheduler.queue: redis, from {sources.get('sched_queue', 'default')}) "
                          "needs a Redis: set store.redis_url or CONCLAVE_REDIS_URL")
