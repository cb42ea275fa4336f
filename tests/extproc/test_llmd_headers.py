"""llm-d-router's request headers over ext_proc: each name and the older one it still accepts,
the new one winning when both come, the SLO headers, and none of them reaching the model
server."""

from __future__ import annotations

import json

import pytest

from . import envoy_messages as m
from .test_request_path import read, send_request

CHAT = json.dumps({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}).encode()

CASES = [
    # (headers, objective, fairness id, target model)
    ({"x-llm-d-inference-objective": "gold"}, "gold", "default-flow", "llama"),
    ({"x-gateway-inference-objective": "gold"}, "gold", "default-flow", "llama"),
    ({"x-llm-d-inference-fairness-id": "t1"}, None, "t1", "llama"),
    ({"x-gateway-inference-fairness-id": "t1"}, None, "t1", "llama"),
    ({"x-llm-d-model-name-rewrite": "lora"}, None, "default-flow", "lora"),
    ({"x-gateway-model-name-rewrite": "lora"}, None, "default-flow", "lora"),
    (
        {
            "x-gateway-inference-objective": "old",
            "x-llm-d-inference-objective": "new",
            "x-gateway-inference-fairness-id": "old",
            "x-llm-d-inference-fairness-id": "new",
            "x-gateway-model-name-rewrite": "old",
            "x-llm-d-model-name-rewrite": "new",
        },
        "new",
        "new",
        "new",
    ),
]


@pytest.mark.parametrize(("headers", "objective", "fairness_id", "target"), CASES)
async def test_each_header_form_classifies_the_request_and_is_removed(
    stub, pipeline, headers, objective, fairness_id, target
):
    call = stub.Process()
    await send_request(call, CHAT, headers)
    header_answer, body_answer = await read(call, 2)
    [parsed] = pipeline.parsed
    assert (parsed.objective, parsed.fairness_id, parsed.target_model) == (
        objective,
        fairness_id,
        target,
    )
    forwarded = body_answer.request_body.response.body_mutation.streamed_response.body
    assert json.loads(forwarded)["model"] == target
    removed = header_answer.request_headers.response.header_mutation.remove_headers
    assert sorted(removed) == sorted(headers)  # control headers never reach the model server


@pytest.mark.parametrize(
    "names", [("x-llm-d-slo-ttft-ms", "x-llm-d-slo-tpot-ms"), ("x-slo-ttft-ms", "x-slo-tpot-ms")]
)
async def test_slo_headers_are_read_in_milliseconds_and_removed(stub, pipeline, names):
    ttft, tpot = names
    call = stub.Process()
    await send_request(call, CHAT, {ttft: "250", tpot: "12.5"})
    header_answer, _ = await read(call, 2)
    [parsed] = pipeline.parsed
    assert (parsed.slo_ttft_s, parsed.slo_tpot_s) == (0.25, 0.0125)
    removed = header_answer.request_headers.response.header_mutation.remove_headers
    assert sorted(removed) == sorted(names)


async def test_the_new_slo_header_wins_over_the_old_one(stub, pipeline):
    call = stub.Process()
    await send_request(call, CHAT, {"x-slo-ttft-ms": "900", "x-llm-d-slo-ttft-ms": "100"})
    await read(call, 2)
    assert pipeline.parsed[0].slo_ttft_s == 0.1


@pytest.mark.parametrize("value", ["fast", "-5", "nan", "1e400"])
async def test_a_malformed_slo_header_is_400_naming_it(stub, value):
    call = stub.Process()
    await send_request(call, CHAT, {"x-llm-d-slo-ttft-ms": value})
    [answer] = await read(call)
    immediate = answer.immediate_response
    assert immediate.status.code == 400
    assert immediate.body.startswith(b"inference error: BadRequest - invalid x-llm-d-slo-ttft-ms")


async def test_headers_only_gateways_may_set_are_removed_too(stub):
    injected = {
        "x-gateway-destination-endpoint-served": "10.0.0.9:8000",
        "x-llm-d-request-dropped-reason": "evicted",
        "x-llm-d-video-fps": "30",
    }
    call = stub.Process()
    await send_request(call, CHAT, injected)
    header_answer, _ = await read(call, 2)
    removed = header_answer.request_headers.response.header_mutation.remove_headers
    assert sorted(removed) == sorted(injected)
    assert m.set_headers(header_answer.request_headers.response.header_mutation)[
        "x-gateway-destination-endpoint"
    ]
