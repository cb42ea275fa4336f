"""The error taxonomy shared by every front end.

Codes and HTTP statuses follow upstream's EPP (llm-d-router: `inference error: <Code> -
<message>`), so a gateway or client that parses upstream's errors parses ours. Every request
Sluice drops says why in `x-llm-d-request-dropped-reason`, with upstream's values
(`DroppedReason`): 429 when the pool has endpoints but they are contended, 503 when it has none
(or none the request may use).
"""

from __future__ import annotations

import math
from enum import Enum

import orjson


class ErrorCode(Enum):
    BAD_REQUEST = ("BadRequest", 400)
    NOT_FOUND = ("NotFound", 404)  # the proxy forwards only its allow-listed routes
    METHOD_NOT_ALLOWED = ("MethodNotAllowed", 405)
    REQUEST_TIMEOUT = ("RequestTimeout", 408)  # the client's body did not arrive in time
    PAYLOAD_TOO_LARGE = ("PayloadTooLarge", 413)
    RESOURCE_EXHAUSTED = ("ResourceExhausted", 429)  # GIE v1.3: InferencePoolResourceExhausted
    SERVICE_UNAVAILABLE = ("ServiceUnavailable", 503)
    BAD_GATEWAY = ("BadGateway", 502)
    GATEWAY_TIMEOUT = ("GatewayTimeout", 504)  # no engine answered within its first-byte timeout
    INTERNAL = ("Internal", 500)

    @property
    def name_on_wire(self) -> str:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]


class DroppedReason:
    """The values of `x-llm-d-request-dropped-reason` (llm-d-router's `RequestDroppedReason`)."""

    # Rejected: the request never reached a model server.
    SATURATED = "rejected-saturated"  # 429: the queue is full, or no endpoint may take it
    NO_ENDPOINTS = "rejected-no-endpoints"  # 503: the pool has none, or none in the subset
    TTL_EXPIRED = "rejected-ttl-expired"  # 429: it waited its TTL out on a pool with endpoints
    CONTEXT_CANCELLED = "rejected-context-cancelled"  # 503: the client left while it waited
    SHUTTING_DOWN = "rejected-shutting-down"  # 503: Sluice is stopping
    # Evicted: dispatched, then ended before its first token for a higher band.
    EVICTED = "evicted"  # 429


class SluiceError(Exception):
    """A request-level failure that becomes exactly one HTTP error response."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_after_s: float | None = None,
        dropped_reason: str | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        # Set when flow control or the director dropped the request (`DroppedReason`).
        self.dropped_reason = dropped_reason

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def wire_text(self) -> str:
        """Upstream's ImmediateResponse body format."""
        return f"inference error: {self.code.name_on_wire} - {self.message}"

    def __repr__(self) -> str:
        return f"SluiceError({self.code.name_on_wire}, {self.message!r})"


def bad_request(message: str) -> SluiceError:
    return SluiceError(ErrorCode.BAD_REQUEST, message)


def contended(message: str, reason: str, retry_after_s: float | None = None) -> SluiceError:
    """429: the pool has endpoints, but not room for this request now."""
    return SluiceError(
        ErrorCode.RESOURCE_EXHAUSTED, message, retry_after_s=retry_after_s, dropped_reason=reason
    )


def unavailable(message: str, reason: str = DroppedReason.NO_ENDPOINTS) -> SluiceError:
    """503: no endpoint exists that could serve this request."""
    return SluiceError(ErrorCode.SERVICE_UNAVAILABLE, message, dropped_reason=reason)


def shutting_down(retry_after_s: float = 1.0) -> SluiceError:
    """503 with Retry-After: this Sluice is draining; another replica (or this one, restarted)
    will take the request, and nothing of it was sent anywhere."""
    return SluiceError(
        ErrorCode.SERVICE_UNAVAILABLE,
        "Sluice is shutting down; retry",
        retry_after_s=retry_after_s,
        dropped_reason=DroppedReason.SHUTTING_DOWN,
    )


# OpenAI's `error.type` vocabulary, by HTTP status (clients' SDKs branch on the status; humans
# and logs read the type).
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
}


def openai_error_body(err: SluiceError) -> bytes:
    """The error as an OpenAI-shaped JSON body, for the HTTP proxy front end.

    `{"error": {"message": ..., "type": ..., "param": null, "code": "<upstream code>"}}`; the code
    is upstream's wire name (e.g. `ResourceExhausted`) so both shapes line up.
    """
    error = {
        "message": err.message,
        "type": _OPENAI_ERROR_TYPES.get(err.http_status, "server_error"),
        "param": None,
        "code": err.code.name_on_wire,
    }
    return orjson.dumps({"error": error})


def retry_after_header_value(err: SluiceError) -> str | None:
    """`Retry-After` in whole seconds (rounded up, at least 1), or None when not advised."""
    if err.retry_after_s is None or not math.isfinite(err.retry_after_s):
        return None
    return str(max(1, math.ceil(err.retry_after_s)))
