"""Every failure leaves the gateway as an OpenAI-style error body; no stack trace reaches a client."""

from __future__ import annotations

import logging
import math
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from experts_registry.errors import (ConclaveError, DependencyUnavailable, InvalidRequest, NotFound, RateLimited,
                                     ShuttingDown, UpstreamError, UserError, ValidationFailed)

from ..core.metrics import Metrics
from ..core.redis_retry import is_redis_down, unavailable

log = logging.getLogger("conclave.errors")


def error_response(exc: ConclaveError, metrics: Metrics | None = None) -> JSONResponse:
    if metrics is not None:
        metrics.errors.labels(exc.type).inc()
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=error_headers(exc))


def error_headers(exc: ConclaveError) -> dict[str, str]:
    """Retry-After where the error knows when to come back (429, 503); ``x-should-retry: false`` (read by
    the OpenAI SDKs) on errors the same request cannot get past by retrying."""
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and exc.status in (429, 503):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if not retryable(exc):
        headers["x-should-retry"] = "false"
    return headers


def retryable(exc: ConclaveError) -> bool:
    if isinstance(exc, UserError):
        return isinstance(exc, RateLimited)
    if isinstance(exc, UpstreamError):
        return exc.retryable or exc.status in (503, 504)
    return exc.status >= 503 or isinstance(exc, (ShuttingDown, DependencyUnavailable))


def from_validation(exc: RequestValidationError) -> UserError:
    return from_errors(exc.errors())


def from_errors(errors: list) -> UserError:
    """A pydantic/FastAPI validation error list as one OpenAI-style client error."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidRequest("the request body is not valid JSON", code="invalid_json")
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    if not loc and first.get("type") in ("missing", "model_attributes_type", "model_type", "dict_type"):
        return InvalidRequest("the request body must be a JSON object", code="invalid_body")
    return ValidationFailed(f"{param or 'body'}: {msg}", param=param)


def response_for(exc: Exception, metrics: Metrics) -> JSONResponse:
    """The response for an exception a route raised: its own error, or an opaque 500 (logged)."""
    if is_redis_down(exc):   # Redis (registry, queue or rate limits) is away: retryable, and logged once a while
        exc = unavailable(exc)
    if isinstance(exc, ConclaveError):
        if exc.status >= 500 and not _quiet(exc):
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return error_response(exc, metrics)
    log.error("unhandled error", exc_info=exc)
    return error_response(ConclaveError("internal error: the gateway logged the details"), metrics)


_last_outage_log = [0.0]


def _quiet(exc: ConclaveError) -> bool:
    """A dependency outage is logged once per 30 s, not once per request."""
    if not isinstance(exc, DependencyUnavailable):
        return False
    now = time.monotonic()
    if now - _last_outage_log[0] < 30:
        return True
    _last_outage_log[0] = now
    return False


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(ConclaveError)
    async def _conclave(_: Request, exc: ConclaveError):
        return response_for(exc, metrics)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return error_response(from_validation(exc), metrics)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException):
        if exc.status_code == 404:
            err: ConclaveError = NotFound("no such route: see /docs for the API")
        else:
            err = UserError(str(exc.detail))
            err.status = exc.status_code
        return error_response(err, metrics)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        return response_for(exc, metrics)
