"""The one error tree of Conclave.

Every package raises these; the gateway maps each to an HTTP status and an
OpenAI-style body (``{"error": {"message", "type", "param", "code"}}``) and the
CLI prints ``message`` and exits non-zero.  Messages say what to do next.

    ConclaveError                      500 server_error
    ├── UserError                      400 invalid_request_error   (caller's mistake)
    │   ├── InvalidRequest             400
    │   │   ├── ContextLengthExceeded  400 context_length_exceeded (the prompt does not fit the expert)
    │   │   └── RouterUnavailable      400 router_unavailable (the named router is not trained here)
    │   ├── ValidationFailed           422
    │   ├── AuthenticationError        401
    │   ├── PermissionDenied           403
    │   ├── NotFound                   404
    │   │   ├── ModelNotFound          404 model_not_found
    │   │   └── ExpertNotFound         404 expert_not_found
    │   ├── Conflict                   409
    │   │   └── ExpertExists           409 expert_exists
    │   ├── PayloadTooLarge            413
    │   └── RateLimited                429 (retry_after seconds)
    ├── ConfigError                    500 (server misconfigured: says which setting)
    ├── ShuttingDown                   503 (retry_after seconds: the gateway is restarting)
    ├── DependencyUnavailable          503 (retry_after seconds: Redis or the store does not answer)
    └── UpstreamError                  502 (an expert failed; names the expert)
        ├── ExpertTimeout              504
        └── ExpertUnavailable          503 (cannot be loaded/hosted here)
"""

from __future__ import annotations


class ConclaveError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


class UserError(ConclaveError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(UserError):
    code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    """The prompt is longer than the expert's context window (OpenAI's code); never the expert's fault."""
    code = "context_length_exceeded"

    def __init__(self, message: str, *, param: str | None = "messages", expert: str | None = None, **kw):
        super().__init__(message, param=param, **kw)
        self.expert = expert


class RouterUnavailable(InvalidRequest):
    code = "router_unavailable"


class ValidationFailed(UserError):
    status = 422
    code = "invalid_value"


class AuthenticationError(UserError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(UserError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(UserError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class ExpertNotFound(NotFound):
    code = "expert_not_found"


class Conflict(UserError):
    status = 409
    code = "conflict"


class ExpertExists(Conflict):
    code = "expert_exists"


class PayloadTooLarge(UserError):
    status = 413
    code = "payload_too_large"


class RateLimited(UserError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ConfigError(ConclaveError):
    code = "config_error"


class ShuttingDown(ConclaveError):
    """The gateway stopped before this request's answer came; the message says whether it stays queued."""
    status = 503
    code = "shutting_down"

    def __init__(self, message: str, *, retry_after: float = 3.0, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class DependencyUnavailable(ConclaveError):
    """A service the gateway needs (Redis, the registry's store) does not answer; retrying later helps."""
    status = 503
    code = "dependency_unavailable"

    def __init__(self, message: str, *, retry_after: float = 2.0, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class UpstreamError(ConclaveError):
    status = 502
    type = "upstream_error"
    code = "expert_failed"

    def __init__(self, message: str, *, expert: str | None = None, retryable: bool = False,
                 retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.expert = expert
        self.retryable = retryable        # connection error, 429 or 5xx: worth another try
        self.retry_after = retry_after    # seconds the upstream asked us to wait


class ExpertTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "expert_timeout"


class ExpertUnavailable(UpstreamError):
    status = 503
    code = "expert_unavailable"
