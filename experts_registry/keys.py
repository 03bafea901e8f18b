"""API keys: stored hashed, never in clear; each with a role, allowed models and rate limits.

A secret is shown once, when created.  The store keeps only its SHA-256 (the
secrets are 256-bit random tokens, so a fast hash is enough: there is nothing
to brute-force).  Lookups go by the hash, so a presented token is never
compared character by character against stored secrets.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field

from .errors import ValidationFailed

ROLES = ("user", "admin")
SECRET_PREFIX = "sk-conclave-"


@dataclass(frozen=True)
class ApiKey:
    id: str                               # public handle, e.g. "ck_1a2b3c4d"
    name: str
    role: str
    hash: str                             # sha256 hex of the secret
    models: tuple[str, ...] = ()          # empty: every model
    rpm: int | None = None                # requests per minute
    tpm: int | None = None                # tokens per minute
    created: float = field(default_factory=time.time)
    revoked: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        if self.role not in ROLES:
            raise ValidationFailed(f"role must be one of {', '.join(ROLES)} (got {self.role!r})", param="role")
        for attr in ("rpm", "tpm"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValidationFailed(f"{attr} must be a positive integer", param=attr)

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models

    def to_json(self) -> str:
        d = asdict(self)
        d["models"] = list(self.models)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ApiKey":
        return cls(**json.loads(text))

    def public(self) -> dict:
        """Everything but the hash (for listings)."""
        d = json.loads(self.to_json())
        d.pop("hash")
        return d


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(name: str, role: str = "user", models=(), rpm: int | None = None,
            tpm: int | None = None) -> tuple[str, ApiKey]:
    """A fresh (secret, record) pair; only the record is stored."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id="ck_" + secrets.token_hex(4), name=name, role=role, hash=hash_secret(secret),
                 models=tuple(models), rpm=rpm, tpm=tpm)
    return secret, key
