"""Embedded store: one SQLite file under ``$CONCLAVE_HOME``."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError, ExpertExists, ExpertNotFound, NotFound
from .keys import ApiKey
from .model import Expert

SCHEMA = """
CREATE TABLE IF NOT EXISTS experts (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, hash TEXT UNIQUE NOT NULL, data TEXT NOT NULL);
"""


@lru_cache(maxsize=4096)
def _expert(data: str) -> Expert:
    """Records are immutable values: the same stored text is parsed and validated once."""
    return Expert.from_json(data)


class SqliteStore:
    """A connection per operation, WAL journal, ``BEGIN IMMEDIATE`` for writes:
    safe for several threads and processes writing at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the registry database {self.path}: {exc}. "
                              "Set CONCLAVE_HOME to a writable folder.") from exc

    @contextmanager
    def _connect(self, write: bool = False):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            if write:
                db.execute("BEGIN IMMEDIATE")
            yield db
            if write:
                db.execute("COMMIT")
        except BaseException:
            if write and db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def get(self, name: str) -> Expert:
        with self._connect() as db:
            row = db.execute("SELECT data FROM experts WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ExpertNotFound(f"no expert named {name!r}: see 'conclave experts list'", param="name")
        return _expert(row[0])

    def list(self) -> list[Expert]:
        with self._connect() as db:
            rows = db.execute("SELECT data FROM experts ORDER BY name").fetchall()
        return [_expert(r[0]) for r in rows]

    def add(self, expert: Expert, *, replace: bool = False) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        try:
            with self._connect(write=True) as db:
                db.execute(f"{verb} INTO experts (name, data) VALUES (?, ?)", (expert.name, expert.to_json()))
        except sqlite3.IntegrityError:
            raise ExpertExists(f"an expert named {expert.name!r} is already registered: "
                               "use --replace to overwrite it", param="name") from None

    def remove(self, name: str) -> None:
        with self._connect(write=True) as db:
            cur = db.execute("DELETE FROM experts WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise ExpertNotFound(f"no expert named {name!r}: see 'conclave experts list'", param="name")

    def claim(self, flag: str) -> bool:
        with self._connect(write=True) as db:
            cur = db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, '1')", (flag,))
        return cur.rowcount == 1

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def put_key(self, key: ApiKey) -> None:
        with self._connect(write=True) as db:
            db.execute("INSERT OR REPLACE INTO api_keys (id, hash, data) VALUES (?, ?, ?)",
                       (key.id, key.hash, key.to_json()))

    def key_by_hash(self, digest: str) -> ApiKey | None:
        with self._connect() as db:
            row = db.execute("SELECT data FROM api_keys WHERE hash = ?", (digest,)).fetchone()
        return ApiKey.from_json(row[0]) if row else None

    def get_key(self, key_id: str) -> ApiKey:
        with self._connect() as db:
            row = db.execute("SELECT data FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}: see 'conclave keys list'", param="id")
        return ApiKey.from_json(row[0])

    def list_keys(self) -> list[ApiKey]:
        with self._connect() as db:
            rows = db.execute("SELECT data FROM api_keys ORDER BY id").fetchall()
        return [ApiKey.from_json(r[0]) for r in rows]
