"""Every error kind the service can answer with, each carrying its HTTP status and code.

No HTTP framework here: the engine and the protocols raise these, and `rmserve.http.error_handlers`
turns any of them into the one error body.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error a client sees as `{"error": {"code", "message", "field"}}` with `status`."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def document(self) -> dict[str, dict[str, str | None]]:
        """The error body's JSON document."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class MalformedJSON(ServiceError):
    status, code = 400, "malformed_json"


class IncompleteBody(ServiceError):
    """The body stopped before its end: the client left mid-upload, or its chunked framing broke."""

    status, code = 400, "incomplete_body"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="rmserve"'})


class ModelNotFound(ServiceError):
    status, code = 404, "model_not_found"

    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown model {name!r}; loaded: {', '.join(known) or 'none'}", field="model")


class NotEnabled(ServiceError):
    """A feature that is off by a setting (telemetry, the review buffer)."""

    status, code = 404, "not_enabled"


class RequestTimeout(ServiceError):
    """The client did not send its request's headers or body in time (answered before the request is routed)."""

    status, code = 408, "request_timeout"


class LeaseLost(ServiceError):
    """A labeller saves a task they no longer hold: their lease expired and someone else has it now."""

    status, code = 409, "lease_lost"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class HeadersTooLarge(ServiceError):
    status, code = 431, "headers_too_large"


class InvalidField(ServiceError):
    """A field is present but wrong; `field` names it the way the client wrote it (`items[3].response`)."""

    status, code = 422, "invalid_field"

    def __init__(self, field: str, message: str):
        super().__init__(message, field=field)


class EmptyInput(ServiceError):
    status, code = 422, "empty_input"


class QueueFull(ServiceError):
    status, code = 429, "queue_full"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class NotReady(ServiceError):
    status, code = 503, "not_ready"

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class DeadlineExceeded(ServiceError):
    status, code = 504, "deadline_exceeded"
