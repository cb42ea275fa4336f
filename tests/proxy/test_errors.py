"""Failures become OpenAI-shaped error JSON with the ext_proc front end's status codes."""

from __future__ import annotations

from sluice.director.contract import Limits, Outcome
from sluice.requests.errors import ErrorCode, SluiceError

from .conftest import make_pipeline
from .fake_engine import unused_endpoint
from .test_relay import url


def assert_openai_error(document: dict, code: str) -> None:
    assert set(document) == {"error"}
    assert set(document["error"]) >= {"message", "type", "code"}
    assert document["error"]["code"] == code  # upstream's error code, as ext_proc reports it
    assert document["error"]["message"]


async def test_a_body_that_is_not_json_is_a_400(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]))

    async with client.post(url(proxy, "/v1/completions"), data=b"not json") as response:
        assert response.status == 400
        assert_openai_error(await response.json(), "BadRequest")
    assert engine.received == []


async def test_a_declared_oversized_body_is_a_413_before_parsing(start_proxy, client):
    pipeline = make_pipeline([unused_endpoint()])
    proxy = await start_proxy(pipeline, Limits(max_body_bytes=1024))

    body = b'{"model": "m", "prompt": "' + b"x" * 2048 + b'"}'
    async with client.post(url(proxy, "/v1/completions"), data=body) as response:
        assert response.status == 413
        assert_openai_error(await response.json(), "PayloadTooLarge")
    assert pipeline.parses == 0


async def test_an_oversized_chunked_body_is_a_413_while_reading(start_proxy, client):
    pipeline = make_pipeline([unused_endpoint()])
    proxy = await start_proxy(pipeline, Limits(max_body_bytes=1024))
    chunks_sent = 0

    async def endless_body():  # no Content-Length: the proxy must count as it reads
        nonlocal chunks_sent
        for _ in range(10_000):
            chunks_sent += 1
            yield b"x" * 512

    async with client.post(url(proxy, "/v1/completions"), data=endless_body()) as response:
        assert response.status == 413
        assert_openai_error(await response.json(), "PayloadTooLarge")
    assert pipeline.parses == 0
    assert chunks_sent < 10_000  # the proxy answered without swallowing the whole body


async def test_capacity_rejection_is_a_429_with_retry_after(start_proxy, client):
    pipeline = make_pipeline([unused_endpoint()])
    pipeline.inner.reject_with = SluiceError(
        ErrorCode.RESOURCE_EXHAUSTED, "queue full", retry_after_s=1.2
    )
    proxy = await start_proxy(pipeline)

    async with client.post(url(proxy, "/v1/completions"), json={"model": "m"}) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "2"  # whole seconds, rounded up
        assert_openai_error(await response.json(), "ResourceExhausted")


async def test_an_empty_pool_is_a_503(start_proxy, client):
    proxy = await start_proxy(make_pipeline([]))

    async with client.post(url(proxy, "/v1/completions"), json={"model": "m"}) as response:
        assert response.status == 503
        assert_openai_error(await response.json(), "ServiceUnavailable")


async def test_when_no_endpoint_answers_the_client_gets_a_502(start_proxy, client):
    pipeline = make_pipeline([unused_endpoint("a"), unused_endpoint("b")], fallbacks=1)
    proxy = await start_proxy(pipeline)

    async with client.post(url(proxy, "/v1/completions"), json={"model": "m"}) as response:
        assert response.status == 502
        assert_openai_error(await response.json(), "BadGateway")
    assert pipeline.only_admission().finishes == [Outcome.UPSTREAM_ERROR]


async def test_a_pipeline_bug_is_a_500_in_the_same_shape(start_proxy, client):
    pipeline = make_pipeline([unused_endpoint()])

    def broken_parse(*args, **kwargs):
        raise KeyError("a bug")

    pipeline.inner.parse = broken_parse
    proxy = await start_proxy(pipeline)

    async with client.post(url(proxy, "/v1/completions"), json={"model": "m"}) as response:
        assert response.status == 500
        assert_openai_error(await response.json(), "Internal")
