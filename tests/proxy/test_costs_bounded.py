"""Issue #15 item 5: one request must not poison a band's fairness.

Reproduction: `max_tokens: 4611686018427387904` was charged as its estimate, the engine refused
the request without usage, the charge was never corrected, and every tenant that became active
later was lifted to ~9.2e18, where real costs no longer move anything (a light tenant's median
finish went from 0.99 s to 1.75 s). `1e308` made the counter NaN, a 400-digit integer gave 500,
JSON nested 1,000 deep gave 500.

Now such numbers are 400s, estimates are clamped to the model's context (`--max-model-len`)
before flow control sees them, and an engine's refusal is refunded.
"""

from __future__ import annotations

import asyncio

import pytest

from metrics.test_metrics_endpoint import StartSluice, start_sluice  # noqa: F401 (fixture)
from proxy.fake_engine import MAX_MODEL_LEN
from sluice.datalayer.model_context import contexts_from_listing, merge
from sluice.director.core import clamp_to_context
from sluice.requests.errors import SluiceError
from sluice.requests.parse import MAX_TOKENS_LIMIT, parse_request

DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (b'"max_tokens": 4611686018427387904', "max_tokens must be between 0 and 2147483647"),
        (b'"max_tokens": ' + b"9" * 400, "max_tokens must be between 0 and"),
        (b'"max_tokens": 1e308', "max_tokens must be an integer, got 1e+308"),
        (b'"max_tokens": 1e999', "Number out of range"),
        (b'"max_tokens": 2.5', "max_tokens must be an integer, got 2.5"),
        (b'"max_tokens": -1', "max_tokens must be between 0 and"),
        (b'"max_completion_tokens": "10"', "max_completion_tokens must be an integer, got string"),
        (b'"max_tokens": true', "max_tokens must be an integer, got boolean"),
        (b'"extra": ' + DEEP, "request body nests too deeply"),
        (b'"prompt": ' + DEEP, "request body nests too deeply"),
    ],
)
def test_numbers_no_model_could_honour_and_deep_nesting_are_400(field: bytes, message: str) -> None:
    body = b'{"model": "m", "prompt": "hi", ' + field + b"}"
    if b'"prompt": [' in field:
        body = b'{"model": "m", ' + field + b"}"
    with pytest.raises(SluiceError) as refused:
        parse_request({}, body, path="/v1/completions")
    assert refused.value.http_status == 400
    assert message in refused.value.message


def test_whole_floats_and_the_limit_itself_are_accepted() -> None:
    body = b'{"model": "m", "prompt": "hi", "max_tokens": 16.0}'
    assert parse_request({}, body, path="/v1/completions").max_tokens == 16
    body = b'{"model": "m", "prompt": "hi", "max_tokens": %d}' % MAX_TOKENS_LIMIT
    assert parse_request({}, body, path="/v1/completions").max_tokens == MAX_TOKENS_LIMIT


def test_estimates_are_clamped_to_the_context() -> None:
    body = b'{"model": "m", "prompt": "hi", "max_tokens": 2000000000}'
    request = parse_request({}, body, path="/v1/completions")
    clamp_to_context(request, 4096)
    assert request.prompt_tokens + request.max_tokens == 4096
    request.prompt_tokens = 10_000
    clamp_to_context(request, 4096)
    assert (request.prompt_tokens, request.max_tokens) == (4096, 0)


async def test_a_refused_request_is_refunded_and_lifts_no_later_tenant(
    start_sluice: StartSluice,  # noqa: F811
) -> None:
    sluice = await start_sluice("--max-model-len=100000")
    band = lambda: sluice.app.flow.bands[0]  # noqa: E731 (the default band)
    # The engine's /v1/models says 8192: that, not the flag's fallback, bounds the estimate.
    for _ in range(100):
        if sluice.app.director.core.model_context:
            break
        await asyncio.sleep(0.02)
    assert sluice.app.director.core.model_context == {"test-model": MAX_MODEL_LEN}

    assert await sluice.send(b"light-early") == b"HTTP/1.1 200 OK"
    light_cost = band().flows["light-early"].served
    # Clamped to the context (8192 tokens, not 2e9), then refused by the engine — its prompt
    # is longer than Sluice's estimate — with a 400 and no usage: the charge goes back to zero.
    answer = await sluice.send(b"heavy", max_tokens=2_000_000_000)
    assert answer == b"HTTP/1.1 400 Bad Request"
    heavy = band().flows["heavy"]
    assert heavy.served == 0
    # A tenant that becomes active later is lifted to the band's floor: a real cost, not the
    # poisoned one (before: ~9.2e18).
    assert await sluice.send(b"light-late") == b"HTTP/1.1 200 OK"
    late = band().flows["light-late"]
    assert late.counter <= 3 * light_cost


def test_contexts_come_from_the_engines_model_listings() -> None:
    listing = {
        "data": [
            {"id": "a", "max_model_len": 4096},
            {"id": "b"},  # says nothing: the flag's fallback applies
            {"id": "c", "max_model_len": True},
            "junk",
        ]
    }
    assert contexts_from_listing(listing) == {"a": 4096}
    assert contexts_from_listing([]) == {}
    assert merge([{"a": 4096}, {"a": 2048, "d": 10}]) == {"a": 2048, "d": 10}  # smallest counts
