"""Errors as HTTP answers in OpenAI's error JSON shape.

The status codes match the ext_proc front end (both come from `SluiceError.http_status`); the
message keeps upstream's `inference gateway: <Code> - <message>` text so log scrapers and clients
that parse upstream's EPP errors keep working.
"""

from __future__ import annotations

import math

import orjson
from aiohttp import web

from sluice.requests.errors import ErrorCode, SluiceError

# OpenAI's `type` values for the statuses Sluice produces.
_OPENAI_TYPE = {
    400: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
}


def error_body(error: SluiceError) -> bytes:
    """`{"error": {"message", "type", "code"}}` for one error."""
    return orjson.dumps(
        {
            "error": {
                "message": error.wire_text(),
                "type": _OPENAI_TYPE.get(error.http_status, "server_error"),
                "code": error.code.name_on_wire,
            }
        }
    )


def error_response(error: SluiceError) -> web.Response:
    headers = {"Content-Type": "application/json"}
    if error.retry_after_s is not None:
        # Retry-After takes whole seconds; round up so a client never retries too early.
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return web.Response(status=error.http_status, body=error_body(error), headers=headers)


def sse_error_event(error: SluiceError) -> bytes:
    """The last event of a stream that broke after bytes reached the client."""
    return b"data: " + error_body(error) + b"\n\n"


def bad_gateway(message: str) -> SluiceError:
    return SluiceError(ErrorCode.BAD_GATEWAY, message)


def service_unavailable(message: str) -> SluiceError:
    return SluiceError(ErrorCode.SERVICE_UNAVAILABLE, message)


def payload_too_large(limit: int) -> SluiceError:
    return SluiceError(ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds {limit} bytes")
