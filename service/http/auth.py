"""Who is calling: API keys from the environment and from the store, resolved to a Principal.

Authentication is on as soon as any key exists (``CONCLAVE_API_KEYS``,
``CONCLAVE_ADMIN_KEYS``, or a key created with ``conclave keys create``).
Admin routes need an admin key even when authentication is off: the registry
is never writable over HTTP by an anonymous caller.  Stored keys are looked up
by the SHA-256 of the presented token and cached for ``key_cache_seconds``
(so a revocation takes effect within that time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from experts_registry import Store
from experts_registry.errors import AuthenticationError, PermissionDenied
from experts_registry.keys import ApiKey, hash_secret

from ..core.config import Settings


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: str
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models

    def check_model(self, model: str) -> None:
        if not self.allows(model):
            raise PermissionDenied(f"this API key may not use the model {model!r}", param="model")

    @classmethod
    def of(cls, key: ApiKey) -> "Principal":
        return cls(key.id, key.role, key.models, key.rpm, key.tpm)


ANONYMOUS = Principal("anonymous", "user")


class Authenticator:
    def __init__(self, settings: Settings, store: Store):
        self.store = store
        self.ttl = settings.key_cache_seconds
        # ids stable across restarts and key-list edits: they scope rate limits and Idempotency-Keys
        self.env = {hash_secret(k): Principal(f"env-user-{hash_secret(k)[:12]}", "user") for k in settings.api_keys}
        self.env.update({hash_secret(k): Principal(f"env-admin-{hash_secret(k)[:12]}", "admin")
                         for k in settings.admin_keys})
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._any_stored: tuple[float, bool] = (0.0, False)

    def required(self) -> bool:
        if self.env:
            return True
        expires, value = self._any_stored
        if time.monotonic() >= expires:
            value = any(not k.revoked for k in self.store.list_keys())
            self._any_stored = (time.monotonic() + self.ttl, value)
        return value

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization`` header; ANONYMOUS when authentication is off
        (whatever token is sent: clients such as openai's always send one)."""
        if not self.required():
            return ANONYMOUS
        token = _bearer(authorization)
        if token is None:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        principal = self._lookup(hash_secret(token))
        if principal is None:
            raise AuthenticationError("invalid or revoked API key")
        return principal

    def _lookup(self, digest: str) -> Principal | None:
        if digest in self.env:
            return self.env[digest]
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        key = self.store.key_by_hash(digest)
        principal = Principal.of(key) if key is not None and not key.revoked else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self.ttl, principal)
        return principal


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("malformed Authorization header: use 'Authorization: Bearer <key>'")
    return token.strip()


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("this route needs an admin key (create one with "
                               "'conclave keys create NAME --role admin')")
