"""Errors as HTTP answers in OpenAI's error JSON shape.

The body and `Retry-After` come from `sluice.requests.errors` (shared with every front end); the
status codes match the ext_proc front end (both come from `SluiceError.http_status`).
"""

from __future__ import annotations

from aiohttp import web

from sluice.requests.errors import (
    ErrorCode,
    SluiceError,
    openai_error_body,
    retry_after_header_value,
)
from sluice.requests.headers import HEADER_DROPPED_REASON

from .headers import SERVER


def error_response(error: SluiceError) -> web.Response:
    headers = {"Content-Type": "application/json", "Server": SERVER}
    if error.dropped_reason is not None:
        headers[HEADER_DROPPED_REASON] = error.dropped_reason
    retry_after = retry_after_header_value(error)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return web.Response(status=error.http_status, body=openai_error_body(error), headers=headers)


def sse_error_event(error: SluiceError) -> bytes:
    """The last event of a stream that broke after bytes reached the client."""
    return b"data: " + openai_error_body(error) + b"\n\n"


def bad_gateway(message: str) -> SluiceError:
    return SluiceError(ErrorCode.BAD_GATEWAY, message)


def service_unavailable(message: str) -> SluiceError:
    return SluiceError(ErrorCode.SERVICE_UNAVAILABLE, message)


def payload_too_large(limit: int) -> SluiceError:
    return SluiceError(ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds {limit} bytes")
