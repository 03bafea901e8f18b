"""The store seam: where expert records live.

Two implementations with identical behaviour: :class:`~.sqlite_store.SqliteStore`
(embedded, the default) and :class:`~.redis_store.RedisStore` (``CONCLAVE_REDIS_URL``).
Both are safe under concurrent writers: adds are atomic set-if-absent, so a
name collision is reported, never silently overwritten, unless ``replace``.
"""

from __future__ import annotations

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
