"""`/v1/models` speaks for the whole pool; other paths pass through to a chosen endpoint."""

from __future__ import annotations

import dataclasses

from sluice.director.contract import Outcome
from sluice.proxy.routes import parse_routes

from .conftest import QUICK_STOP, make_pipeline
from .fake_engine import unused_endpoint
from .test_relay import url

# Passthrough is for routes the operator adds (`--proxy-allowed-routes`); none pass by default.
PASSTHROUGH = dataclasses.replace(
    QUICK_STOP, extra_routes=parse_routes("GET /health, POST /tokenize, POST /v1/load_lora_adapter")
)


async def test_models_is_the_union_over_endpoints_that_answer(start_engines, start_proxy, client):
    first, second = await start_engines(2)
    first.models = ("llama", "shared-lora")
    second.models = ("shared-lora", "mistral")
    pipeline = make_pipeline([first.endpoint, unused_endpoint(), second.endpoint])
    proxy = await start_proxy(pipeline)

    async with client.get(url(proxy, "/v1/models")) as response:
        assert response.status == 200
        listing = await response.json()

    assert listing["object"] == "list"
    assert sorted(model["id"] for model in listing["data"]) == ["llama", "mistral", "shared-lora"]


async def test_models_is_a_502_when_no_endpoint_answers(start_proxy, client):
    proxy = await start_proxy(make_pipeline([unused_endpoint()]))

    async with client.get(url(proxy, "/v1/models")) as response:
        assert response.status == 502


async def test_a_bodiless_request_passes_through_to_any_endpoint(
    start_engines, start_proxy, client
):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline, options=PASSTHROUGH)

    async with client.get(url(proxy, "/health?verbose=1")) as response:
        assert response.status == 200
        echo = await response.json()

    assert (echo["method"], echo["path"], echo["query"]) == ("GET", "/health", "verbose=1")
    assert pipeline.admissions == []  # nothing to classify, nothing to account


async def test_a_passthrough_body_naming_a_model_is_admitted(start_engines, start_proxy, client):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline, options=PASSTHROUGH)

    body = {"model": "test-model", "prompt": "count my tokens"}
    async with client.post(url(proxy, "/tokenize"), json=body) as response:
        assert response.status == 200
        assert (await response.json())["path"] == "/tokenize"

    assert pipeline.only_admission().finishes == [Outcome.COMPLETED]


async def test_a_passthrough_body_without_a_model_goes_to_any_endpoint(
    start_engines, start_proxy, client
):
    (engine,) = await start_engines(1)
    pipeline = make_pipeline([engine.endpoint])
    proxy = await start_proxy(pipeline, options=PASSTHROUGH)

    async with client.post(url(proxy, "/v1/load_lora_adapter"), data=b"raw bytes") as response:
        assert response.status == 200
        assert (await response.json())["body"] == "raw bytes"

    assert pipeline.admissions == []
