"""The error taxonomy shared by every front end.

Codes and HTTP statuses follow upstream's EPP (`inference gateway: <Code> - <message>`), so a
gateway or client that parses upstream's errors parses ours.
"""

from __future__ import annotations

import math
from enum import Enum

import orjson


class ErrorCode(Enum):
    BAD_REQUEST = ("BadRequest", 400)
    PAYLOAD_TOO_LARGE = ("PayloadTooLarge", 413)
    RESOURCE_EXHAUSTED = ("InferencePoolResourceExhausted", 429)
    SERVICE_UNAVAILABLE = ("ServiceUnavailable", 503)
    BAD_GATEWAY = ("BadGateway", 502)
    INTERNAL = ("Internal", 500)

    @property
    def name_on_wire(self) -> str:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]


class SluiceError(Exception):
    """A request-level failure that becomes exactly one HTTP error response."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def http_status(self) -> int:
        return self.code.http_status

    def wire_text(self) -> str:
        """Upstream's ImmediateResponse body format."""
        return f"inference gateway: {self.code.name_on_wire} - {self.message}"

    def __repr__(self) -> str:
        return f"SluiceError({self.code.name_on_wire}, {self.message!r})"


def bad_request(message: str) -> SluiceError:
    return SluiceError(ErrorCode.BAD_REQUEST, message)


# OpenAI's `error.type` vocabulary, by HTTP status (clients' SDKs branch on the status; humans
# and logs read the type).
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
}


def openai_error_body(err: SluiceError) -> bytes:
    """The error as an OpenAI-shaped JSON body, for the HTTP proxy front end.

    `{"error": {"message": ..., "type": ..., "param": null, "code": "<upstream code>"}}`; the code
    is upstream's wire name (e.g. `InferencePoolResourceExhausted`) so both shapes line up.
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
