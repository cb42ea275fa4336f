"""parse_request: headers + body bytes → InferenceRequest, or a 400/413 SluiceError."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from sluice.requests.errors import ErrorCode, SluiceError
from sluice.requests.model import ApiKind
from sluice.requests.parse import api_for_path, parse_duration_s, parse_request
from sluice.requests.tokens import MEDIA_PART_TOKENS, chat_tokens, text_tokens

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def parse(
    payload: bytes, path: str | None = CHAT, headers: dict[str, str] | None = None, **options: Any
):
    return parse_request(
        headers or {}, payload, path=path, request_id_factory=lambda: "generated-id", **options
    )


def rejected(payload: bytes, path: str | None = CHAT, **options: Any) -> SluiceError:
    with pytest.raises(SluiceError) as caught:
        parse(payload, path, **options)
    return caught.value


# --- the four APIs ------------------------------------------------------------------------------


def test_a_chat_request_yields_messages_and_a_token_estimate():
    request = parse(
        body(
            model="llama",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there"},
            ],
        )
    )

    assert request.api is ApiKind.CHAT
    assert request.model == request.target_model == "llama"
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "be brief"),
        ("user", "hello there"),
    ]
    assert request.prompt_tokens == chat_tokens([8, 11])


def test_chat_content_parts_keep_text_and_charge_a_flat_cost_per_image():
    request = parse(
        body(
            model="m",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is in"},
                        {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
                        {"type": "text", "text": "this picture?"},
                    ],
                }
            ],
        )
    )

    content = request.messages[0].content
    assert content.startswith("what is in\n<image_url:")
    assert content.endswith("\nthis picture?")
    assert request.prompt_tokens >= MEDIA_PART_TOKENS


def test_two_chats_differing_only_in_the_image_differ_in_prompt_text():
    def with_image(url: str) -> str:
        return (
            parse(
                body(
                    model="m",
                    messages=[
                        {
                            "role": "user",
                            "content": [{"type": "image_url", "image_url": {"url": url}}],
                        }
                    ],
                )
            )
            .messages[0]
            .content
        )

    assert with_image("https://x/a.png") != with_image("https://x/b.png")


def test_tools_and_tool_calls_count_toward_the_prompt():
    plain = parse(body(model="m", messages=[{"role": "user", "content": "hi"}]))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    with_tools = parse(
        body(
            model="m",
            tools=tools,
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": "{}"},
                        }
                    ],
                },
            ],
        )
    )

    assert with_tools.prompt_tokens > plain.prompt_tokens + 20
    assert with_tools.messages[1].content == ""


def test_completions_accepts_a_string_prompt():
    request = parse(body(model="m", prompt="Once upon a time"), COMPLETIONS)

    assert request.api is ApiKind.COMPLETIONS
    assert request.prompt == "Once upon a time"
    assert request.prompt_tokens == text_tokens("Once upon a time")


def test_completions_accepts_a_list_of_strings():
    request = parse(body(model="m", prompt=["abcd", "efghijkl"]), COMPLETIONS)

    assert request.prompt == "abcd\nefghijkl"
    assert request.prompt_tokens == 1 + 2


def test_token_id_prompts_count_one_token_per_id():
    single = parse(body(model="m", prompt=[1, 2, 3, 4, 5]), COMPLETIONS)
    batch = parse(body(model="m", prompt=[[1, 2], [3, 4, 5]]), COMPLETIONS)

    assert single.prompt_tokens == 5 and single.prompt_token_ids == (1, 2, 3, 4, 5)
    assert batch.prompt_tokens == 5 and batch.prompt_token_ids == (1, 2, 3, 4, 5)
    assert single.prompt == ""


@pytest.mark.parametrize(
    "payload", ["some text to embed", ["a", "bb"], [101, 2023, 102], [[101], [102, 103]]]
)
def test_embeddings_accept_every_input_shape(payload: Any):
    request = parse(body(model="embedder", input=payload), "/v1/embeddings")

    assert request.api is ApiKind.EMBEDDINGS
    assert request.prompt_tokens > 0


def test_responses_input_string_and_instructions_become_messages():
    request = parse(
        body(model="m", instructions="answer in French", input="hello"), "/v1/responses"
    )

    assert request.api is ApiKind.RESPONSES
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "answer in French"),
        ("user", "hello"),
    ]


def test_responses_input_items_cover_messages_parts_and_tool_outputs():
    request = parse(
        body(
            model="m",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look:"},
                        {"type": "input_image", "image_url": "data:..."},
                    ],
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
        ),
        "/v1/responses",
    )

    assert request.messages[0].content.startswith("look:\n<input_image:")
    assert [(m.role, m.content) for m in request.messages[1:]] == [
        ("function_call", '{"a": 1}'),
        ("function_call_output", "42"),
    ]
    assert request.prompt_tokens > MEDIA_PART_TOKENS


def test_responses_may_omit_input_when_continuing_a_stored_conversation():
    request = parse(body(model="m", previous_response_id="resp_1"), "/v1/responses")

    assert request.messages == ()


def test_other_paths_have_no_body_requirements():
    empty = parse(b"", "/v1/models")
    not_json = parse(b"\x00binary audio", "/v1/audio/transcriptions")
    with_model = parse(body(model="reranker", query="q", documents=["a"]), "/v1/rerank")

    assert empty.api is not_json.api is ApiKind.OTHER
    assert empty.model == not_json.model == ""
    assert with_model.model == "reranker"


# --- path classification and body-shape inference -----------------------------------------------


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", ApiKind.CHAT),
        ("/openai/deployments/x/chat/completions?api-version=2024-02-01", ApiKind.CHAT),
        ("/v1/completions", ApiKind.COMPLETIONS),
        ("/v1/embeddings/", ApiKind.EMBEDDINGS),
        ("/v1/responses", ApiKind.RESPONSES),
        ("/v1/models", ApiKind.OTHER),
    ],
)
def test_api_is_classified_by_path_suffix(path: str, api: ApiKind):
    assert api_for_path(path) is api


def test_without_a_path_the_colon_path_header_is_used():
    request = parse(body(model="m", input="x"), path=None, headers={":path": "/v1/embeddings"})

    assert request.api is ApiKind.EMBEDDINGS
    assert request.path == "/v1/embeddings"


def test_without_any_path_the_body_shape_decides_like_upstream():
    assert parse(body(model="m", prompt="p"), path=None).api is ApiKind.COMPLETIONS
    assert (
        parse(body(model="m", messages=[{"role": "user", "content": "c"}]), path=None).api
        is ApiKind.CHAT
    )
    assert "neither prompt nor messages" in rejected(body(model="m", input="x"), None).message


# --- options and headers ------------------------------------------------------------------------


def test_stream_max_tokens_and_cache_salt_are_read():
    request = parse(
        body(
            model="m",
            messages=[{"role": "user", "content": "c"}],
            stream=True,
            max_completion_tokens=64,
            max_tokens=10,
            cache_salt="tenant-a",
        )
    )

    assert request.stream is True
    assert request.max_tokens == 64  # the newer name wins
    assert request.cache_salt == "tenant-a"


def test_max_output_tokens_is_read_for_responses():
    assert parse(body(model="m", input="x", max_output_tokens=7), "/v1/responses").max_tokens == 7


def test_control_headers_are_read():
    request = parse(
        body(model="m", prompt="p"),
        COMPLETIONS,
        headers={
            "x-request-id": "abc",
            "x-gateway-inference-objective": "premium",
            "x-gateway-inference-fairness-id": "tenant-7",
            "x-sluice-request-ttl": "500ms",
        },
        subset_hint=frozenset({"10.0.0.1:8000"}),
    )

    assert request.request_id == "abc"
    assert request.objective == "premium"
    assert request.fairness_id == "tenant-7"
    assert request.ttl_s == pytest.approx(0.5)
    assert request.subset_hint == frozenset({"10.0.0.1:8000"})


@pytest.mark.parametrize(
    ("headers", "objective", "fairness_id"),
    [
        ({"x-llm-d-inference-objective": "new"}, "new", "default-flow"),
        ({"x-gateway-inference-objective": "old"}, "old", "default-flow"),
        ({"x-llm-d-inference-fairness-id": "new"}, None, "new"),
        ({"x-gateway-inference-fairness-id": "old"}, None, "old"),
        (
            {"x-gateway-inference-objective": "old", "x-llm-d-inference-objective": "new"},
            "new",
            "default-flow",
        ),
        (
            {"x-gateway-inference-fairness-id": "old", "x-llm-d-inference-fairness-id": "new"},
            None,
            "new",
        ),
        # As upstream: the first name present wins even when empty (then: none / the default).
        (
            {"x-llm-d-inference-objective": "", "x-gateway-inference-objective": "old"},
            None,
            "default-flow",
        ),
    ],
)
def test_llm_d_names_and_the_older_gateway_names_are_read_the_new_one_winning(
    headers, objective, fairness_id
):
    request = parse(body(model="m", prompt="p"), COMPLETIONS, headers=headers)
    assert (request.objective, request.fairness_id) == (objective, fairness_id)


def test_the_new_rewrite_header_wins_over_the_old_one():
    headers = {"x-gateway-model-name-rewrite": "old", "x-llm-d-model-name-rewrite": "new"}
    request = parse(body(model="m", prompt="p"), COMPLETIONS, headers=headers)
    assert request.target_model == "new"
    assert json.loads(request.body)["model"] == "new"


@pytest.mark.parametrize(
    ("headers", "ttft", "tpot"),
    [
        ({"x-llm-d-slo-ttft-ms": "250", "x-llm-d-slo-tpot-ms": "12.5"}, 0.25, 0.0125),
        ({"x-slo-ttft-ms": " 1000 ", "x-slo-tpot-ms": "0"}, 1.0, 0.0),
        ({"x-slo-ttft-ms": "900", "x-llm-d-slo-ttft-ms": "100"}, 0.1, None),
        ({"x-llm-d-slo-ttft-ms": ""}, None, None),
        ({}, None, None),
    ],
)
def test_slo_headers_are_milliseconds(headers, ttft, tpot):
    request = parse(body(model="m", prompt="p"), COMPLETIONS, headers=headers)
    assert (request.slo_ttft_s, request.slo_tpot_s) == (ttft, tpot)


@pytest.mark.parametrize("value", ["fast", "-1", "inf", "nan", "1e999", "5ms"])
def test_a_malformed_slo_header_is_a_400_that_names_it_and_the_fix(value):
    with pytest.raises(SluiceError) as info:
        parse(body(model="m", prompt="p"), COMPLETIONS, headers={"x-llm-d-slo-ttft-ms": value})
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert "x-llm-d-slo-ttft-ms" in info.value.message and "milliseconds" in info.value.message


def test_defaults_when_headers_are_absent():
    request = parse(body(model="m", prompt="p"), COMPLETIONS)

    assert request.request_id == "generated-id"
    assert request.fairness_id == "default-flow"
    assert request.objective is None and request.ttl_s is None
    assert request.priority == 0


def test_a_request_id_is_a_fresh_uuid_by_default():
    first = parse_request({}, body(model="m", prompt="p"), path=COMPLETIONS)
    second = parse_request({}, body(model="m", prompt="p"), path=COMPLETIONS)

    assert len(first.request_id) == 36 and first.request_id != second.request_id


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2.0), ("500ms", 0.5), ("1.5", 1.5), ("3", 3.0), ("1m", 60.0), (" 2 s ", 2.0)],
)
def test_ttl_durations(text: str, seconds: float):
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "0", "1d", "inf"])
def test_an_invalid_ttl_header_is_a_400_naming_the_header(text: str):
    error = rejected(
        body(model="m", prompt="p"), COMPLETIONS, headers={"x-sluice-request-ttl": text}
    )

    assert error.code is ErrorCode.BAD_REQUEST
    assert "x-sluice-request-ttl" in error.message


# --- bytes are never re-encoded -----------------------------------------------------------------


def test_the_body_is_forwarded_byte_for_byte_when_no_rewrite_applies():
    raw = (
        b'{ "seed": 9223372036854775807, "model" : "m",\n "messages": [{"role":"user",'
        b'"content":"\\u00e9<&>"}], "temperature": 0.10000000000000000555 }'
    )

    request = parse(raw)

    assert request.body is raw


def test_the_rewrite_header_changes_only_the_model_bytes():
    raw = b'{"seed": 9223372036854775807, "model": "public",  "prompt": "p"}'

    request = parse(raw, COMPLETIONS, headers={"x-gateway-model-name-rewrite": "private-v2"})

    assert request.model == "public"
    assert request.target_model == "private-v2"
    assert request.body == b'{"seed": 9223372036854775807, "model": "private-v2",  "prompt": "p"}'


@dataclass
class _Meta:
    name: str
    creation_timestamp: str = "2024-01-01T00:00:00Z"


@dataclass
class _ModelMatch:
    value: str
    type: str = "Exact"


@dataclass
class _Match:
    model: _ModelMatch


@dataclass
class _Target:
    model_rewrite: str
    weight: int | None = None


@dataclass
class _Rule:
    targets: list[_Target]
    matches: list[_Match] = field(default_factory=list)


@dataclass
class _Spec:
    rules: list[_Rule]


@dataclass
class _Rewrite:
    metadata: _Meta
    spec: _Spec


def test_a_model_rewrite_resource_applies_to_the_body_and_the_header_beats_it():
    rewrite = _Rewrite(
        _Meta("r"), _Spec([_Rule([_Target("base-lora")], [_Match(_ModelMatch("alias"))])])
    )
    raw = body(model="alias", prompt="p")

    by_resource = parse(raw, COMPLETIONS, rewrites=[rewrite], rng=random.Random(0))
    by_header = parse(
        raw, COMPLETIONS, rewrites=[rewrite], headers={"x-gateway-model-name-rewrite": "forced"}
    )

    assert by_resource.target_model == "base-lora"
    assert json.loads(by_resource.body)["model"] == "base-lora"
    assert json.loads(by_header.body)["model"] == "forced"


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "unmarshaling"),
        (b'{"model": "m", "prompt": "p"} trailing', "unmarshaling"),
        (b'{"model": "\xff"}', "unmarshaling"),
        (b'["model", "m"]', "must be a JSON object"),
        (b'{"prompt": "p"}', "model not found"),
        (b'{"model": null, "prompt": "p"}', "model not found"),
        (b'{"model": 7, "prompt": "p"}', "model must be a string, got number"),
        (b'{"model": "", "prompt": "p"}', "model must not be empty"),
    ],
)
def test_malformed_bodies_are_400_with_a_clear_reason(payload: bytes, reason: str):
    error = rejected(payload, COMPLETIONS)

    assert error.code is ErrorCode.BAD_REQUEST and error.http_status == 400
    assert reason in error.message


@pytest.mark.parametrize(
    ("path", "fields", "reason"),
    [
        (COMPLETIONS, {}, "prompt is required"),
        (COMPLETIONS, {"prompt": ""}, "prompt must not be empty"),
        (COMPLETIONS, {"prompt": []}, "prompt must not be an empty list"),
        (COMPLETIONS, {"prompt": [1, "a"]}, "prompt must be a string, a list of strings"),
        (COMPLETIONS, {"prompt": [[]]}, "token-id lists"),
        (COMPLETIONS, {"prompt": {"text": "x"}}, "prompt must be a string or a list, got object"),
        (CHAT, {}, "messages is required"),
        (CHAT, {"messages": []}, "at least one message"),
        (CHAT, {"messages": "hi"}, "messages must be a list"),
        (CHAT, {"messages": ["hi"]}, "messages[0] must be an object"),
        (CHAT, {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ("/v1/embeddings", {"input": ""}, "input must not be empty"),
        ("/v1/responses", {}, "input is required"),
        ("/v1/responses", {"input": []}, "input must not be an empty list"),
    ],
)
def test_missing_or_empty_prompts_are_400(path: str, fields: dict[str, Any], reason: str):
    error = rejected(body(model="m", **fields), path)

    assert error.code is ErrorCode.BAD_REQUEST
    assert reason in error.message


def test_a_body_over_the_limit_is_413_before_any_parsing():
    error = rejected(b"x" * 101, COMPLETIONS, max_body_bytes=100)

    assert error.code is ErrorCode.PAYLOAD_TOO_LARGE and error.http_status == 413
    assert "101" in error.message and "100" in error.message
