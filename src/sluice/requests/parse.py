"""Headers + body bytes → `InferenceRequest`: the one entry point both front ends call.

Understands the OpenAI-compatible APIs vLLM serves — `/v1/completions` (string, list of strings,
token ids), `/v1/chat/completions` (text and multimodal parts, tools), `/v1/embeddings` and
`/v1/responses` — and passes any other path through with no body requirements. When the path is
unknown (an ext_proc stream without `:path`) the API is inferred from the body as upstream does:
`prompt` → completions, `messages` → chat.

The body is decoded once, by msgspec into a struct that names only the fields we read (the rest
is skipped in C, never built as Python objects), and it is never re-encoded: the bytes forwarded
are the client's bytes, with at most the `model` value spliced (see `requests.rewrite`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from uuid import uuid4

import msgspec

from sluice.requests import tokens
from sluice.requests.classify import priority_of
from sluice.requests.errors import ErrorCode, SluiceError, bad_request
from sluice.requests.headers import (
    FAIRNESS_ID_HEADERS,
    HEADER_REQUEST_TTL,
    MODEL_REWRITE_HEADERS,
    OBJECTIVE_HEADERS,
    SLO_TPOT_HEADERS,
    SLO_TTFT_HEADERS,
    first_header,
    header_value,
)
from sluice.requests.model import (
    DEFAULT_FAIRNESS_ID,
    HEADER_REQUEST_ID,
    ApiKind,
    ChatMessage,
    InferenceRequest,
)
from sluice.requests.rewrite import rewrite_model
from sluice.requests.select_rewrite import ModelRewriteLike, RandomLike, resolve_target_model
from sluice.util.durations import parse_duration

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# The path a request is taken to have when its caller names none (an ext_proc stream without
# `:path`, a `Pipeline.parse` call without `path=`).
DEFAULT_PATH = "/v1/chat/completions"
_UNSET: Any = msgspec.UNSET

# Content-part types that carry text (chat uses "text"; the Responses API the other two).
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
# Responses-API items without `content` keep their text in one of these fields.
_ITEM_TEXT_FIELDS = ("output", "arguments", "text")


class _Body(msgspec.Struct):
    """The members we read; everything else in the body is skipped by the decoder."""

    model: Any = _UNSET
    prompt: Any = _UNSET
    messages: Any = _UNSET
    input: Any = _UNSET
    instructions: Any = _UNSET
    tools: Any = _UNSET
    stream: Any = _UNSET
    max_tokens: Any = _UNSET
    max_completion_tokens: Any = _UNSET
    max_output_tokens: Any = _UNSET
    cache_salt: Any = _UNSET
    previous_response_id: Any = _UNSET
    conversation: Any = _UNSET


_DECODER = msgspec.json.Decoder(_Body)


class _Prompt(msgspec.Struct):
    """What one API's body contributes: text for prefix affinity, and a token estimate."""

    tokens: int
    text: str = ""
    messages: tuple[ChatMessage, ...] = ()
    token_ids: tuple[int, ...] = ()


def parse_request(
    headers: Mapping[str, str],
    body: bytes,
    *,
    path: str | None = None,
    subset_hint: frozenset[str] | None = None,
    request_id_factory: Callable[[], object] = uuid4,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rewrites: Iterable[ModelRewriteLike] = (),
    rng: RandomLike | None = None,
    priorities: Mapping[str, int] | None = None,
) -> InferenceRequest:
    """Parse and classify one request; raises `SluiceError` (400 bad body/header, 413 too large).

    `headers` have lower-case keys; each control header is read under llm-d-router's name or
    the older one it still accepts, the new one winning (`requests.headers`). `path` falls back
    to the `:path` header, then to the body shape. `rewrites` are the pool's
    InferenceModelRewrites; when one applies (or the `x-llm-d-model-name-rewrite` header is
    set) the returned `body` carries the target model.
    `priorities` are the pool's objectives' (name → priority): the request's class — its band
    and, through its fairness id, its flow — is decided here, once (`requests.classify`).
    """
    if len(body) > max_body_bytes:
        raise SluiceError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"request body is {len(body)} bytes; the limit is {max_body_bytes}",
        )
    path = path or headers.get(":path") or ""
    api = api_for_path(path) if path else None
    header_rewrite = header_value(headers, MODEL_REWRITE_HEADERS) or None

    if api is ApiKind.OTHER:
        # Other APIs have no body contract; use a string `model` if the body happens to have one.
        fields = _decode_quietly(body)
        model = fields.model if isinstance(fields.model, str) else ""
        prompt = _Prompt(tokens=0)
    else:
        fields = _decode(body)
        model = _required_model(fields.model)
        if api is None:
            api = _infer_api(fields)
        prompt = _extract_prompt(api, fields)

    target_model = model
    if model:
        target_model = resolve_target_model(
            model, header_rewrite=header_rewrite, rewrites=rewrites, rng=rng
        )
        if target_model != model:
            body = rewrite_model(body, target_model)
    elif header_rewrite:
        target_model = header_rewrite

    objective = header_value(headers, OBJECTIVE_HEADERS) or None
    return InferenceRequest(
        request_id=headers.get(HEADER_REQUEST_ID) or str(request_id_factory()),
        api=api,
        model=model,
        target_model=target_model,
        body=body,
        prompt_tokens=prompt.tokens,
        prompt=prompt.text,
        messages=prompt.messages,
        prompt_token_ids=prompt.token_ids,
        max_tokens=_max_tokens(fields),
        stream=fields.stream is True,
        cache_salt=_optional_str(fields.cache_salt),
        objective=objective,
        priority=priority_of(objective, priorities or {}),
        fairness_id=header_value(headers, FAIRNESS_ID_HEADERS) or DEFAULT_FAIRNESS_ID,
        ttl_s=_ttl_header(headers.get(HEADER_REQUEST_TTL)),
        slo_ttft_s=_slo_header(headers, SLO_TTFT_HEADERS),
        slo_tpot_s=_slo_header(headers, SLO_TPOT_HEADERS),
        subset_hint=subset_hint,
        headers=headers,
        path=path,
    )


def api_for_path(path: str) -> ApiKind:
    """Classify by the URL path (query string ignored; any prefix allowed, e.g. `/openai/v1`)."""
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return ApiKind.CHAT
    if path.endswith("/completions"):
        return ApiKind.COMPLETIONS
    if path.endswith("/embeddings"):
        return ApiKind.EMBEDDINGS
    if path.endswith("/responses"):
        return ApiKind.RESPONSES
    return ApiKind.OTHER


def parse_duration_s(text: str) -> float:
    """`"2s"`, `"500ms"`, `"1.5"` (seconds), `"1m"`, `"1h"` → seconds; raises ValueError.
    Spaces are tolerated (`" 2 s "`): a hand-typed header is not a config file."""
    seconds = parse_duration("".join(text.split()))
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"duration must be positive: {text!r}")
    return seconds


# --- body decoding ------------------------------------------------------------------------------


def _decode(body: bytes) -> _Body:
    if not body.strip():
        raise bad_request("request body is empty; expected a JSON object")
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:  # only the top-level type can fail: fields are Any
        raise bad_request(f"request body must be a JSON object ({exc})") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"error unmarshaling request body: {exc}") from None
    except RecursionError:  # the decoder's depth limit (Python's recursion limit)
        raise bad_request("request body nests too deeply") from None


def _decode_quietly(body: bytes) -> _Body:
    try:
        return _DECODER.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # ValidationError too
        return _Body()


def _required_model(model: Any) -> str:
    if model is _UNSET or model is None:
        raise bad_request("model not found in request body")
    if not isinstance(model, str):
        raise bad_request(f"model must be a string, got {_json_type(model)}")
    if not model:
        raise bad_request("model must not be empty")
    return model


def _infer_api(fields: _Body) -> ApiKind:
    # Upstream tries a completions body first, then chat; nothing else is recognisable.
    if fields.prompt is not _UNSET and fields.prompt is not None:
        return ApiKind.COMPLETIONS
    if fields.messages is not _UNSET and fields.messages is not None:
        return ApiKind.CHAT
    raise bad_request("request body has neither prompt nor messages (and the path is unknown)")


def _extract_prompt(api: ApiKind, fields: _Body) -> _Prompt:
    if api is ApiKind.COMPLETIONS:
        return _prompt_like(fields.prompt, "prompt")
    if api is ApiKind.EMBEDDINGS:
        return _prompt_like(fields.input, "input")
    if api is ApiKind.CHAT:
        return _chat(fields)
    return _responses(fields)


# --- completions / embeddings -------------------------------------------------------------------


def _prompt_like(value: Any, name: str) -> _Prompt:
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    if value is _UNSET or value is None:
        raise bad_request(f"{name} is required")
    if isinstance(value, str):
        if not value:
            raise bad_request(f"{name} must not be empty")
        return _Prompt(tokens=tokens.text_tokens(value), text=value)
    if not isinstance(value, list):
        raise bad_request(f"{name} must be a string or a list, got {_json_type(value)}")
    if not value:
        raise bad_request(f"{name} must not be an empty list")
    if all(isinstance(item, str) for item in value):
        if not any(value):
            raise bad_request(f"{name} must not be empty")
        return _Prompt(tokens=sum(tokens.text_tokens(s) for s in value), text="\n".join(value))
    if all(_is_token_id(item) for item in value):
        return _Prompt(tokens=len(value), token_ids=tuple(value))
    if all(isinstance(item, list) and item and all(map(_is_token_id, item)) for item in value):
        ids = tuple(token for item in value for token in item)
        return _Prompt(tokens=len(ids), token_ids=ids)
    raise bad_request(
        f"{name} must be a string, a list of strings, a list of token ids, "
        "or a list of non-empty token-id lists"
    )


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --- chat ---------------------------------------------------------------------------------------


class _Content(msgspec.Struct):
    text: str
    media_parts: int = 0


def _chat(fields: _Body) -> _Prompt:
    raw = fields.messages
    if raw is _UNSET or raw is None:
        raise bad_request("messages is required")
    if not isinstance(raw, list):
        raise bad_request(f"messages must be a list, got {_json_type(raw)}")
    if not raw:
        raise bad_request("messages must contain at least one message")
    messages: list[ChatMessage] = []
    media = 0
    extra_chars = _json_chars(fields.tools)
    for index, message in enumerate(raw):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{index}] must be an object, got {_json_type(message)}")
        text = message.get("content")
        if not isinstance(text, str):  # the plain-string case is the hot path: skip the helper
            content = _content(text, f"messages[{index}].content")
            text, media = content.text, media + content.media_parts
        if "tool_calls" in message:  # rendered into the prompt by the chat template
            extra_chars += _json_chars(message["tool_calls"])
        role = message.get("role")
        messages.append(ChatMessage(role if isinstance(role, str) else "", text))
    return _chat_prompt(messages, media, extra_chars)


def _chat_prompt(messages: list[ChatMessage], media: int, extra_chars: int) -> _Prompt:
    estimate = tokens.chat_tokens(
        (len(m.content) for m in messages), media_parts=media, extra_chars=extra_chars
    )
    return _Prompt(tokens=estimate, messages=tuple(messages))


def _content(value: Any, where: str) -> _Content:
    """Message content: a string, null (assistant tool calls), or a list of typed parts."""
    if value is None or isinstance(value, str):
        return _Content(text=value or "")
    if not isinstance(value, list):
        raise bad_request(f"{where} must be a string or a list of parts, got {_json_type(value)}")
    texts: list[str] = []
    media = 0
    for part in value:
        if isinstance(part, str):
            texts.append(part)
        elif not isinstance(part, dict):
            raise bad_request(f"{where} parts must be objects, got {_json_type(part)}")
        elif part.get("type") in _TEXT_PARTS:
            texts.append(_str_or_empty(part.get("text")))
        else:
            # A short stand-in so two prompts differing only in an image differ in prefix too.
            media += 1
            texts.append(_media_marker(part))
    return _Content(text="\n".join(texts), media_parts=media)


def _media_marker(part: dict[str, Any]) -> str:
    digest = hashlib.blake2b(msgspec.json.encode(part), digest_size=8).hexdigest()
    return f"<{_str_or_empty(part.get('type')) or 'part'}:{digest}>"


# --- responses ----------------------------------------------------------------------------------


def _responses(fields: _Body) -> _Prompt:
    messages: list[ChatMessage] = []
    media = 0
    if isinstance(fields.instructions, str) and fields.instructions:
        messages.append(ChatMessage(role="system", content=fields.instructions))
    raw = fields.input
    if raw is _UNSET or raw is None:
        # The conversation may live on the server (previous response, stored prompt).
        continues = (fields.previous_response_id, fields.conversation, fields.prompt)
        if all(value is _UNSET or value is None for value in continues):
            raise bad_request("input is required")
    elif isinstance(raw, str):
        if not raw:
            raise bad_request("input must not be empty")
        messages.append(ChatMessage(role="user", content=raw))
    elif isinstance(raw, list):
        if not raw:
            raise bad_request("input must not be an empty list")
        for index, item in enumerate(raw):
            message, item_media = _response_item(item, f"input[{index}]")
            messages.append(message)
            media += item_media
    else:
        raise bad_request(f"input must be a string or a list of items, got {_json_type(raw)}")
    return _chat_prompt(messages, media, _json_chars(fields.tools))


def _response_item(item: Any, where: str) -> tuple[ChatMessage, int]:
    if isinstance(item, str):
        return ChatMessage(role="user", content=item), 0
    if not isinstance(item, dict):
        raise bad_request(f"{where} must be an object, got {_json_type(item)}")
    if "content" in item:
        content = _content(item["content"], f"{where}.content")
        role = _str_or_empty(item.get("role")) or "user"
        return ChatMessage(role=role, content=content.text), content.media_parts
    # Tool calls and their outputs, reasoning items…: count whatever text they carry.
    text = next((v for f in _ITEM_TEXT_FIELDS if isinstance(v := item.get(f), str)), "")
    return ChatMessage(role=_str_or_empty(item.get("type")), content=text), 0


# --- small readers ------------------------------------------------------------------------------


# Above any model's context by far; a larger number is a mistake or an attack on the cost
# estimate (issue #15: 2**62 was charged as is and lifted every tenant's fairness counter).
MAX_TOKENS_LIMIT = 2**31 - 1
_MAX_TOKEN_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def _max_tokens(fields: _Body) -> int | None:
    """The first output-token limit given; 400 for one that is not a whole number in
    0..MAX_TOKENS_LIMIT (a float like 1e308, NaN's stand-ins, a 400-digit integer)."""
    found: int | None = None
    for name in _MAX_TOKEN_FIELDS:
        value = getattr(fields, name)
        if value is _UNSET or value is None:
            continue
        if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_TOKENS_LIMIT:
            value = int(value)  # 16.0: as vLLM's validation takes it
        if isinstance(value, bool) or not isinstance(value, int):
            shown = repr(value) if isinstance(value, float) else _json_type(value)
            raise bad_request(f"{name} must be an integer, got {shown}")
        if not 0 <= value <= MAX_TOKENS_LIMIT:
            shown = str(value) if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
            raise bad_request(f"{name} must be between 0 and {MAX_TOKENS_LIMIT}, got {shown}")
        if found is None:
            found = value
    return found


def _ttl_header(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration_s(value)
    except ValueError:
        raise bad_request(
            f"invalid {HEADER_REQUEST_TTL} header {value!r}: "
            'expected a positive duration such as "2s", "500ms" or "1.5"'
        ) from None


def _slo_header(headers: Mapping[str, str], names: tuple[str, ...]) -> float | None:
    """A latency objective in milliseconds (a non-negative number), as seconds; absent or
    empty is None. Upstream's ordering policy silently ignores a malformed value; Sluice
    answers 400 instead, so that a client never believes an objective it did not get."""
    found = first_header(headers, names)
    if found is None or not found[1].strip():
        return None
    name, value = found
    try:
        milliseconds = float(value.strip())
    except ValueError:
        milliseconds = math.nan
    if not (milliseconds >= 0 and math.isfinite(milliseconds)):
        raise bad_request(
            f"invalid {name} header {value!r}: expected milliseconds as a number >= 0, "
            'such as "500" or "1500.5"'
        )
    return milliseconds / 1000.0


def _json_chars(value: Any) -> int:
    return 0 if value is _UNSET or value is None else len(msgspec.json.encode(value))


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _str_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
