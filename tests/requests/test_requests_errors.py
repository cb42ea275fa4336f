"""Error helpers: OpenAI-shaped bodies and Retry-After."""

from __future__ import annotations

import json

import pytest

from sluice.requests.errors import (
    ErrorCode,
    SluiceError,
    bad_request,
    openai_error_body,
    retry_after_header_value,
)


def test_an_error_becomes_an_openai_error_object():
    body = json.loads(openai_error_body(bad_request("model not found in request body")))

    assert body == {
        "error": {
            "message": "model not found in request body",
            "type": "invalid_request_error",
            "param": None,
            "code": "BadRequest",
        }
    }


@pytest.mark.parametrize(
    ("code", "type_"),
    [
        (ErrorCode.RESOURCE_EXHAUSTED, "rate_limit_error"),
        (ErrorCode.SERVICE_UNAVAILABLE, "service_unavailable"),
        (ErrorCode.PAYLOAD_TOO_LARGE, "invalid_request_error"),
        (ErrorCode.INTERNAL, "server_error"),
    ],
)
def test_the_type_follows_the_http_status_and_the_code_is_upstreams(code: ErrorCode, type_: str):
    error = json.loads(openai_error_body(SluiceError(code, "m")))["error"]

    assert error["type"] == type_
    assert error["code"] == code.name_on_wire


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(None, None), (0.2, "1"), (1.0, "1"), (2.01, "3"), (0, "1"), (float("inf"), None)],
)
def test_retry_after_is_whole_seconds_rounded_up(seconds: float | None, header: str | None):
    error = SluiceError(ErrorCode.RESOURCE_EXHAUSTED, "full", retry_after_s=seconds)

    assert retry_after_header_value(error) == header
