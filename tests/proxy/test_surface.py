"""Issue #15 items 4 and 10: what the proxy forwards, and the headers it shows.

The proxy used to forward any method and path to the engines, outside flow control: `POST
/admin/faults` hung simulated engines, and on vLLM the same route reaches `/sleep` or
`/v1/load_lora_adapter`. Absolute-form URIs and `..` paths went through as sent. Now only the
allow-list passes; anything else is answered by Sluice and never reaches an engine.
"""

from __future__ import annotations

import asyncio

import pytest

from sluice.proxy.routes import RouteSpecError, parse_routes

from .conftest import make_pipeline


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes as written (no client normalises them) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(1 << 16), 5)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/admin/faults", 404),  # the simulator's fault switch
        ("POST", "/sleep", 404),  # vLLM's
        ("POST", "/reset_prefix_cache", 404),
        ("POST", "/v1/load_lora_adapter", 404),
        ("GET", "/metrics", 404),
        ("GET", "/v1/chat/completions", 405),  # an allowed path, another method
        ("DELETE", "/v1/models", 405),
    ],
)
async def test_routes_off_the_allow_list_never_reach_an_engine(
    start_engines, start_proxy, client, method, path, status
):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]))

    async with client.request(
        method, f"http://127.0.0.1:{proxy.port}{path}", json={"model": "test-model"}
    ) as response:
        assert response.status == status
        assert (await response.json())["error"]["message"].startswith(f"{method} {path}")
    assert engine.received == []


@pytest.mark.parametrize(
    "target",
    [
        b"http://127.0.0.1:1/v1/chat/completions",  # absolute-form
        b"/v1/../admin/faults",
        b"/v1/chat/completions/..",
        b"/v1/%2e%2e/admin/faults",  # a dot segment, percent-encoded
        b"/v1/chat%2fcompletions",
        b"//v1/chat/completions",
        b"*",
    ],
)
async def test_targets_that_are_not_plain_origin_form_are_refused(
    start_engines, start_proxy, target
):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]))

    body = b'{"model": "test-model", "prompt": "x"}'
    answer = await raw_exchange(
        proxy.port,
        b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body,
    )
    assert status_of(answer) in (400, 404)  # aiohttp itself may refuse a malformed target first
    assert engine.received == []


async def test_the_inference_routes_still_pass_with_a_query(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]))

    async with client.post(
        f"http://127.0.0.1:{proxy.port}/v1/completions?trace=1",
        json={"model": "test-model", "prompt": "hi", "max_tokens": 1},
    ) as response:
        assert response.status == 200
    assert [r.path for r in engine.received] == ["/v1/completions"]


def test_an_added_route_must_be_method_and_clean_path() -> None:
    assert parse_routes("POST /v1/rerank, GET /health") == {
        ("POST", "/v1/rerank"),
        ("GET", "/health"),
    }
    for bad in ("/v1/rerank", "post /x", "GET /a/../b", "GET http://x/y"):
        with pytest.raises(RouteSpecError):
            parse_routes(bad)


async def test_two_connection_lines_are_both_honoured(start_engines, start_proxy):
    """Item 10: with two `Connection:` lines only the last counted, so a header the first one
    named hop-by-hop reached the engine."""
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]))

    body = b'{"model": "test-model", "prompt": "x", "max_tokens": 1}'
    answer = await raw_exchange(
        proxy.port,
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: x-secret-a\r\nConnection: close, x-secret-b\r\n"
        b"X-Secret-A: 1\r\nX-Secret-B: 2\r\nX-Kept: 3\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
    )
    assert status_of(answer) == 200
    forwarded = engine.received[0].headers
    assert "x-secret-a" not in forwarded
    assert "x-secret-b" not in forwarded
    assert forwarded["x-kept"] == "3"


async def test_the_server_header_shows_no_versions(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    proxy = await start_proxy(make_pipeline([engine.endpoint]))
    base = f"http://127.0.0.1:{proxy.port}"

    async with client.post(
        f"{base}/v1/completions", json={"model": "test-model", "prompt": "x", "max_tokens": 1}
    ) as relayed:
        assert relayed.headers.getall("Server") == ["sluice"]  # not the engine's either
    async with client.post(f"{base}/v1/completions", data=b"{") as refused:
        assert refused.status == 400
        assert refused.headers.getall("Server") == ["sluice"]
    async with client.get(f"{base}/v1/models") as models:
        assert models.headers.getall("Server") == ["sluice"]
