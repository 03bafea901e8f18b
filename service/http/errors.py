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
                                     ShuttingDown, UpstreamError, UserError)

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
    """A pydantic/FastAPI validation error list as one OpenAI-style client error: 400
    ``invalid_request_error`` whose ``param`` names the field as OpenAI does (``messages[0].role``)."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidRequest("the request body is not valid JSON", code="invalid_json")
    first = errors[0] if errors else {}
    param = param_path(first.get("loc", ()))
    msg = first.get("msg", "invalid request")
    if not param and first.get("type") in ("missing", "model_attributes_type", "model_type", "dict_type"):
        return InvalidRequest("the request body must be a JSON object", code="invalid_body")
    if first.get("type") == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param,
                              code="unknown_parameter")
    code = "invalid_type" if first.get("type", "").endswith(("_type", "_parsing")) else "invalid_value"
    same = [e.get("msg") for e in errors if param_path(e.get("loc", ())) == param]   # a union: every member's
    msg = " or ".join(dict.fromkeys(m[0].lower() + m[1:] if i else m for i, m in enumerate(same) if m)) or msg
    return InvalidRequest(f"{param or 'body'}: {msg}", param=param, code=code)


def param_path(loc) -> str | None:
    """``("body", "messages", 0, "content", "str")`` as ``messages[0].content``: list indexes in brackets,
    the names pydantic gives the members of a union (``str``, ``list[str]``, ...) left out."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "body" and part.isidentifier() and part not in _TYPE_NAMES:
            path += ("." if path else "") + part
    return path or None


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


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
