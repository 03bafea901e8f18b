"""The store seam: where expert records live.

Two implementations with identical behaviour: :class:`~.sqlite_store.SqliteStore`
(embedded, the default) and :class:`~.redis_store.RedisStore` (``CONCLAVE_REDIS_URL``).
Both are safe under concurrent writers: adds are atomic set-if-absent, so a
name collision is reported, never silently overwritten, unless ``replace``.
"""

from __future__ import annotations

import time
from typing import Protocol

from .keys import ApiKey
from .model import Expert


class Store(Protocol):
    """Expert records, API keys, and a tiny flag area for registry bookkeeping."""

    def get(self, name: str) -> Expert: ...           # raises ExpertNotFound
    def list(self) -> list[Expert]: ...               # sorted by name
    def add(self, expert: Expert, *, replace: bool = False) -> None: ...  # raises ExpertExists
    def remove(self, name: str) -> None: ...          # raises ExpertNotFound
    def claim(self, flag: str) -> bool: ...           # atomic set-if-absent; True the first time
    def describe(self) -> str: ...                    # where the records live (no secrets)
    # API keys (stored hashed)
    def put_key(self, key: ApiKey) -> None: ...       # insert or update (revocation)
    def key_by_hash(self, digest: str) -> ApiKey | None: ...
    def get_key(self, key_id: str) -> ApiKey: ...     # raises NotFound
    def list_keys(self) -> list[ApiKey]: ...


class CachedStore:
    """A store whose lookups of one expert by name, and the list of all experts (every routed
    request reads it), are reused for ``ttl`` seconds (each would read the store every time
    otherwise). Writes made through this object take effect at once; writes made elsewhere (the
    CLI, another replica) within ``ttl``. The rest passes through."""

    def __init__(self, inner: Store, ttl: float):
        self.inner = inner
        self.ttl = ttl
        self._hits: dict[str, tuple[float, Expert]] = {}
        self._all: tuple[float, list[Expert]] | None = None

    def list(self) -> list[Expert]:
        now = time.monotonic()
        if self._all is None or self._all[0] <= now:
            self._all = (now + self.ttl, self.inner.list())
        return list(self._all[1])

    def get(self, name: str) -> Expert:
        now = time.monotonic()
        hit = self._hits.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        expert = self.inner.get(name)
        if len(self._hits) > 10_000:
            self._hits.clear()
        self._hits[name] = (now + self.ttl, expert)
        return expert

    def add(self, expert: Expert, *, replace: bool = False) -> None:
        self._hits.pop(expert.name, None)
        self._all = None
        self.inner.add(expert, replace=replace)

    def remove(self, name: str) -> None:
        self._hits.pop(name, None)
        self._all = None
        self.inner.remove(name)

    def __getattr__(self, attr: str):
        return getattr(self.inner, attr)
