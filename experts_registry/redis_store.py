"""Redis store: records in one hash, adds with HSETNX (atomic across replicas)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError, ExpertExists, ExpertNotFound, NotFound
from .keys import ApiKey
from .model import Expert


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class RedisStore:
    def __init__(self, url: str, prefix: str = "conclave:"):
        import redis

        self.url = url
        self.prefix = prefix
        try:
            self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
            self.r.ping()
        except (redis.RedisError, ValueError) as exc:
            raise ConfigError(f"cannot reach Redis at {redact_url(url)} ({type(exc).__name__}): start it, "
                              "fix CONCLAVE_REDIS_URL, or unset it to use the embedded store") from None
        self._experts = prefix + "experts"
        self._meta = prefix + "meta"
        self._keys = prefix + "keys"            # id -> record
        self._key_hashes = prefix + "keyhash"   # sha256 -> id

    def get(self, name: str) -> Expert:
        data = self.r.hget(self._experts, name)
        if data is None:
            raise ExpertNotFound(f"no expert named {name!r}: see 'conclave experts list'", param="name")
        return Expert.from_json(data)

    def list(self) -> list[Expert]:
        items = self.r.hgetall(self._experts)
        return [Expert.from_json(items[k]) for k in sorted(items)]

    def add(self, expert: Expert, *, replace: bool = False) -> None:
        if replace:
            self.r.hset(self._experts, expert.name, expert.to_json())
        elif not self.r.hsetnx(self._experts, expert.name, expert.to_json()):
            raise ExpertExists(f"an expert named {expert.name!r} is already registered: "
                               "use --replace to overwrite it", param="name")

    def remove(self, name: str) -> None:
        if not self.r.hdel(self._experts, name):
            raise ExpertNotFound(f"no expert named {name!r}: see 'conclave experts list'", param="name")

    def claim(self, flag: str) -> bool:
        return bool(self.r.hsetnx(self._meta, flag, "1"))

    def describe(self) -> str:
        return f"redis:{redact_url(self.url)} (prefix {self.prefix!r})"

    def put_key(self, key: ApiKey) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._keys, key.id, key.to_json())
        pipe.hset(self._key_hashes, key.hash, key.id)
        pipe.execute()

    def key_by_hash(self, digest: str) -> ApiKey | None:
        key_id = self.r.hget(self._key_hashes, digest)
        data = self.r.hget(self._keys, key_id) if key_id else None
        return ApiKey.from_json(data) if data else None

    def get_key(self, key_id: str) -> ApiKey:
        data = self.r.hget(self._keys, key_id)
        if data is None:
            raise NotFound(f"no API key with id {key_id!r}: see 'conclave keys list'", param="id")
        return ApiKey.from_json(data)

    def list_keys(self) -> list[ApiKey]:
        items = self.r.hgetall(self._keys)
        return [ApiKey.from_json(items[k]) for k in sorted(items)]
