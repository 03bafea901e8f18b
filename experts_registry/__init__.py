"""Expert registry: expert records, their stores (embedded SQLite or Redis) and the bundled experts."""

from __future__ import annotations

from pathlib import Path

from .bundled import BUNDLED, bundled_experts, resolve_gguf
from .errors import ConclaveError
from .model import Expert
from .store import Store

BUNDLED_FLAG = "bundled-offered"


def open_store(home: str | Path, redis_url: str | None = None, prefix: str = "conclave:") -> Store:
    """Redis when a URL is given, else the embedded SQLite file under ``home``."""
    if redis_url:
        from .redis_store import RedisStore

        return RedisStore(redis_url, prefix=prefix)
    from .sqlite_store import SqliteStore

    return SqliteStore(Path(home) / "registry.sqlite3")


def offer_bundled(store: Store) -> list[str]:
    """On first use, register the bundled local experts (once: removing them later sticks)."""
    if not store.claim(BUNDLED_FLAG):
        return []
    added = []
    for expert in bundled_experts():
        try:
            store.add(expert)
            added.append(expert.name)
        except ConclaveError:
            pass  # a record of that name exists already: keep the user's
    return added


__all__ = ["Expert", "Store", "open_store", "offer_bundled", "BUNDLED", "bundled_experts", "resolve_gguf"]
