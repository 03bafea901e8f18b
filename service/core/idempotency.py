"""``Idempotency-Key``: a client's name for one request, so that a retry collects the first answer
instead of asking again.

The key (1-255 visible ASCII characters, the header OpenAI's and Stripe's APIs use) is scoped to the
calling API key: the request's id in Redis is a hash of both, so one tenant can never reach another's
answer, and the key itself is never stored or logged.  The request body is kept as a digest (the
``stream`` fields left out: an answer may be collected as JSON or as SSE), so the same key with a
different body is refused (422) instead of answered with the first request's result.

The key matters with the Redis queue (``CONCLAVE_SCHED_QUEUE=redis``), where the answer outlives a
gateway process; without it the key is validated and otherwise ignored (a retry runs again).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Mapping

from pydantic import BaseModel

from experts_registry.errors import InvalidRequest, ValidationFailed

HEADER = "Idempotency-Key"
_VALID = re.compile(r"[\x21-\x7e]{1,255}")   # visible ASCII: no spaces, no control characters


@dataclass(frozen=True)
class Ticket:
    """One keyed request: its id in Redis, the digest of its body, and (once routed) the decision."""
    rid: str
    body: str
    route: dict | None = None


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The validated ``Idempotency-Key`` header, or None when the request has none."""
    key = headers.get(HEADER)
    if key is None:
        return None
    if not _VALID.fullmatch(key):
        raise InvalidRequest(f"the {HEADER} header must be 1-255 visible ASCII characters (no spaces), "
                             "e.g. a UUID", param=HEADER, code="invalid_idempotency_key")
    return key


def ticket_for(headers: Mapping[str, str], scope: str, req: BaseModel) -> Ticket | None:
    """The request's ticket when it carries an ``Idempotency-Key``; ``scope`` is the caller's key id."""
    key = idempotency_key(headers)
    if key is None:
        return None
    rid = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:32]
    return Ticket(rid, body_digest(req.model_dump(mode="json", exclude_none=True)))


def body_digest(body: dict) -> str:
    """SHA-256 of the request as JSON with sorted keys, whether it streams left out."""
    kept = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_same_body(ticket: Ticket, recorded: str) -> None:
    if recorded != ticket.body:
        raise ValidationFailed(f"this {HEADER} was already used for a different request body: send a new key "
                               "for a new request (the first request's answer stays with the first key)",
                               param=HEADER, code="idempotency_key_reused")
