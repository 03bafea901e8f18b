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
    router: str | None = None           # None: 'correct' once trained, else 'tags' (RouterHost.default_name)
    generalist: str | None = "smollm2"
    max_loaded_models: int = 2
    moe_k: int = 3
    moe_aggregator: str = "vote"
    aggregator_expert: str | None = None
    llama_threads: int | None = None
    admin_keys: frozenset[str] = field(default_factory=frozenset)
    allow_unsafe_upstreams: bool = False
    allow_volatile_redis: bool = False   # accept a Redis without AOF/RDB as the registry's store
    expert_secrets: frozenset[str] = field(default_factory=frozenset)   # env vars HTTP-registered experts may name
    key_cache_seconds: float = 5.0
    retries: int = 2
    keyword_expert: str | None = None
    keyword_samples: int = 5
    shutdown_grace: float = 30.0
    fallbacks: int = 2
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0
    lean_client: bool = True          # OpenAI-compatible litellm experts through the lean aiohttp client
    expert_cache_seconds: float = 2.0  # how long the gateway reuses an expert record it read by name
    keepalive_seconds: int = 75        # idle keep-alive connections are closed after this (uvicorn: 5)
    otel: bool = False                 # FastAPI's native OpenTelemetry (tracing, metrics, logs) on the routes
    worker_memory_mb: int | None = None
    sched_workers: int = 1
    sched_max_batch: int = 8
    sched_max_wait: float = 10.0
    sched_queue_per_expert: int = 64
    sched_queue_total: int = 256
    sched_reload_gap: float | None = None   # None: the wait bound (one load per expert per batch window)
    sched_admission: str = "queue"          # "queue": queue-size bounds only; "bound": also refuse past the wait bound
    sched_queue: str = "local"
    sched_cluster: str = "affinity"         # Redis queue: "affinity" (placement table, per-expert streams) or "shared"
    sched_replica_fraction: float = 0.5     # a replica when an expert's queued work per holder > this * max_wait
    sched_answer_ttl: int = 3600   # seconds the Redis queue keeps answers (exactly-once marks, Idempotency-Key answers)
    ui_decisions: int = 200         # routing decisions the dashboard keeps in memory (0: none)
    ui_show_prompts: bool = False   # the dashboard shows prompt text (else a keyed hash and the length)

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


def _choice(env, name: str, options: tuple[str, ...]) -> str:
    raw = env.get(name) or options[0]
    if raw not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)} (got {raw!r})")
    return raw


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


def _keys(raw: str) -> frozenset[str]:
    return frozenset(k.strip() for k in raw.split(",") if k.strip())


def _sched_queue(env) -> str:
    queue = env.get("CONCLAVE_SCHED_QUEUE", "local") or "local"
    if queue not in ("local", "redis"):
        raise ConfigError(f"CONCLAVE_SCHED_QUEUE must be 'local' or 'redis' (got {queue!r})")
    if queue == "redis" and not env.get("CONCLAVE_REDIS_URL"):
        raise ConfigError("CONCLAVE_SCHED_QUEUE=redis needs CONCLAVE_REDIS_URL")
    return queue


def load_settings(env: dict | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env["CONCLAVE_HOME"]).expanduser() if env.get("CONCLAVE_HOME") else default_home()
    return Settings(
        home=home,
        redis_url=env.get("CONCLAVE_REDIS_URL") or None,
        redis_prefix=env.get("CONCLAVE_REDIS_PREFIX", "conclave:"),
        api_keys=_keys(env.get("CONCLAVE_API_KEYS", "")),
        max_body_bytes=_number(env, "CONCLAVE_MAX_BODY_BYTES", 1_000_000),
        max_messages=_number(env, "CONCLAVE_MAX_MESSAGES", 256),
        max_tokens_cap=_number(env, "CONCLAVE_MAX_TOKENS_CAP", 2048),
        default_max_tokens=_number(env, "CONCLAVE_DEFAULT_MAX_TOKENS", 256),
        expert_timeout=_number(env, "CONCLAVE_EXPERT_TIMEOUT", 120.0, float, 0.001),
        router=env.get("CONCLAVE_ROUTER") or None,
        generalist=env.get("CONCLAVE_GENERALIST", "smollm2") or None,
        max_loaded_models=_number(env, "CONCLAVE_MAX_LOADED_MODELS", 2),
        moe_k=_number(env, "CONCLAVE_MOE_K", 3),
        moe_aggregator=env.get("CONCLAVE_MOE_AGGREGATOR", "vote"),
        aggregator_expert=env.get("CONCLAVE_AGGREGATOR_EXPERT") or None,
        llama_threads=_number(env, "CONCLAVE_LLAMA_THREADS", None),
        admin_keys=_keys(env.get("CONCLAVE_ADMIN_KEYS", "")),
        allow_unsafe_upstreams=env.get("CONCLAVE_ALLOW_UNSAFE_UPSTREAMS", "") in ("1", "true", "yes"),
        allow_volatile_redis=env.get("CONCLAVE_ALLOW_VOLATILE_REDIS", "") in ("1", "true", "yes"),
        expert_secrets=_keys(env.get("CONCLAVE_EXPERT_SECRETS", "")),
        key_cache_seconds=_number(env, "CONCLAVE_KEY_CACHE_SECONDS", 5.0, float, 0.0),
        retries=_number(env, "CONCLAVE_RETRIES", 2, int, 0),
        keyword_expert=env.get("CONCLAVE_KEYWORD_EXPERT") or None,
        keyword_samples=_number(env, "CONCLAVE_KEYWORD_SAMPLES", 5),
        shutdown_grace=_number(env, "CONCLAVE_SHUTDOWN_GRACE", 30.0, float, 0.0),
        fallbacks=_number(env, "CONCLAVE_FALLBACKS", 2, int, 0),
        breaker_failures=_number(env, "CONCLAVE_BREAKER_FAILURES", 3),
        breaker_cooldown=_number(env, "CONCLAVE_BREAKER_COOLDOWN", 30.0, float, 0.0),
        lean_client=env.get("CONCLAVE_LEAN_CLIENT", "1") not in ("0", "false", "no", "off"),
        expert_cache_seconds=_number(env, "CONCLAVE_EXPERT_CACHE_SECONDS", 2.0, float, 0.0),
        keepalive_seconds=_number(env, "CONCLAVE_KEEPALIVE_SECONDS", 75),
        otel=env.get("CONCLAVE_OTEL", "") in ("1", "true", "yes", "on"),
        worker_memory_mb=_number(env, "CONCLAVE_WORKER_MEMORY_MB", None),
        sched_workers=_number(env, "CONCLAVE_SCHED_WORKERS", 1),
        sched_max_batch=_number(env, "CONCLAVE_SCHED_MAX_BATCH", 8),
        sched_max_wait=_number(env, "CONCLAVE_SCHED_MAX_WAIT", 10.0, float, 0.001),
        sched_queue_per_expert=_number(env, "CONCLAVE_SCHED_QUEUE_PER_EXPERT", 64),
        sched_queue_total=_number(env, "CONCLAVE_SCHED_QUEUE_TOTAL", 256),
        sched_reload_gap=_number(env, "CONCLAVE_SCHED_RELOAD_GAP", None, float, 0),
        sched_admission=_choice(env, "CONCLAVE_SCHED_ADMISSION", ("queue", "bound")),
        sched_queue=_sched_queue(env),
        sched_cluster=_choice(env, "CONCLAVE_SCHED_CLUSTER", ("affinity", "shared")),
        sched_replica_fraction=_number(env, "CONCLAVE_SCHED_REPLICA_FRACTION", 0.5, float, 0.001),
        sched_answer_ttl=_number(env, "CONCLAVE_SCHED_ANSWER_TTL", 3600, int, 60),
        ui_decisions=_number(env, "CONCLAVE_UI_DECISIONS", 200, int, 0),
        ui_show_prompts=env.get("CONCLAVE_UI_SHOW_PROMPTS", "") in ("1", "true", "yes", "on"),
    )
