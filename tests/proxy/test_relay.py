"""Requests and responses cross the proxy intact, and the pipeline hears about every one."""

from __future__ import annotations

from sluice.director.contract import Outcome
from sluice.requests.model import Usage

from .conftest import make_pipeline
from .fake_engine import PROMPT_TOKENS


def url(proxy, path: str) -> str:
    return f"http://127.0.0.1:{proxy.port}{path}"


async def test_a_completion_is_relayed_and_its_usage_accounted(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline)

    body = b'{"model": "test-model", "prompt": "hello",  "max_tokens": 3}'
    async with client.post(url(proxy, "/v1/completions"), data=body) as response:
        assert response.status == 200
        answer = await response.json()

    assert answer["choices"][0]["text"] == "tok0 tok1 tok2"
    assert engine.received[0].body == body  # bytes in, bytes out: not re-encoded
    admission = pipeline.only_admission()
    assert admission.finishes == [Outcome.COMPLETED]
    assert admission.observed_as_stream == {False}
    assert admission.usage_seen() == Usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=3)


async def test_a_streamed_chat_arrives_whole_and_its_usage_accounted(
    start_engines, start_proxy, client
):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline)

    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    body |= {"stream": True, "max_tokens": 5}
    async with client.post(url(proxy, "/v1/chat/completions"), json=body) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        events = [line async for line in response.content if line.startswith(b"data: ")]

    assert len(events) == 5 + 2  # five tokens, the usage chunk, [DONE]
    assert events[-1] == b"data: [DONE]\n"
    admission = pipeline.only_admission()
    assert admission.finishes == [Outcome.COMPLETED]
    assert admission.observed_as_stream == {True}
    assert admission.usage_seen() == Usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=5)


async def test_embeddings_are_relayed(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline)

    body = {"model": "test-model", "input": "a sentence"}
    async with client.post(url(proxy, "/v1/embeddings"), json=body) as response:
        assert response.status == 200
        assert (await response.json())["data"][0]["embedding"] == [0.5, 0.25]
    assert pipeline.only_admission().finishes == [Outcome.COMPLETED]


async def test_control_and_hop_by_hop_headers_stay_at_the_proxy(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline)

    headers = {
        "x-gateway-inference-objective": "premium",
        "x-gateway-inference-fairness-id": "tenant-a",
        "x-gateway-model-name-rewrite": "other-model",
        "x-sluice-request-ttl": "2s",
        "authorization": "Bearer secret-for-the-engine",
        "x-request-id": "req-42",
        "keep-alive": "timeout=5",
    }
    body = {"model": "test-model", "prompt": "hello"}
    async with client.post(url(proxy, "/v1/completions"), json=body, headers=headers) as response:
        assert response.status == 200

    forwarded = engine.received[0].headers
    assert forwarded.keys().isdisjoint(
        {
            "x-gateway-inference-objective",
            "x-gateway-inference-fairness-id",
            "x-gateway-model-name-rewrite",
            "x-sluice-request-ttl",
            "keep-alive",
        }
    )
    assert forwarded["authorization"] == "Bearer secret-for-the-engine"
    assert forwarded["x-request-id"] == "req-42"  # the pipeline's request id


async def test_the_request_id_is_forwarded_even_when_the_client_sent_none(
    start_engines, start_proxy, client
):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline)

    async with client.post(url(proxy, "/v1/completions"), json={"model": "m", "prompt": "x"}):
        pass

    request_id = pipeline.only_admission().request.request_id
    assert engine.received[0].headers["x-request-id"] == request_id
