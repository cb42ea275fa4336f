"""The error taxonomy shared by every front end.

Codes and HTTP statuses follow upstream's EPP (`inference gateway: <Code> - <message>`), so a
gateway or client that parses upstream's errors parses ours.
"""

from __future__ import annotations

from enum import Enum


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
