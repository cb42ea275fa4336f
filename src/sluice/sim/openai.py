"""The OpenAI API as vLLM speaks it, without I/O: parse a request body into a ``SimRequest``, and
build the JSON bodies and SSE frames of the answers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sluice.sim.request import SimRequest
from sluice.sim.tokenizer import count_tokens, filler, render_chat

Kind = Literal["completion", "chat"]
DONE = b"data: [DONE]\n\n"
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # vLLM's (and OpenAI's) default for /v1/completions


class OpenAIError(Exception):
    """An error answered with OpenAI's JSON shape."""

    def __init__(
        self, status: int, message: str, type_: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param

    def body(self) -> bytes:
        error = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.status,
        }
        return orjson.dumps({"error": error})


@dataclass(frozen=True, slots=True)
class ServedModels:
    """The base model and the LoRA adapters an engine answers for."""

    base: str
    loras: Mapping[str, str]  # adapter name -> path (only listed, never read)

    def adapter_for(self, model: object) -> str | None:
        """The adapter a request names (None for the base model); 404 for anything else."""
        if model is None or model == self.base:
            return None
        if isinstance(model, str) and model in self.loras:
            return model
        raise OpenAIError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")

    def listing(self, max_model_len: int) -> bytes:
        created = int(time.time())
        card = {
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "max_model_len": max_model_len,
        }
        data = [{"id": self.base, "root": self.base, "parent": None, **card}]
        data += [
            {"id": name, "root": path, "parent": self.base, **card}
            for name, path in self.loras.items()
        ]
        return orjson.dumps({"object": "list", "data": data})


@dataclass(frozen=True, slots=True)
class Options:
    """Per-engine knobs that shape how bodies become requests."""

    block_size: int
    max_model_len: int
    seed: int = 0
    mean_output_tokens: float = 128.0


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    kind: Kind
    model: str
    stream: bool
    include_usage: bool
    request: SimRequest


def _int_field(body: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpenAIError(400, f"'{name}' must be an integer", param=name)
    return value


def _prompt_text(kind: Kind, body: Mapping[str, Any]) -> str:
    if kind == "chat":
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, Mapping) for m in messages)
        ):
            raise OpenAIError(
                400, "'messages' must be a non-empty list of objects", param="messages"
            )
        return render_chat(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return "".join(f"{t % 10000:04d}" for t in prompt)  # token ids: one 4-char token each
    if not isinstance(prompt, str):
        raise OpenAIError(
            400, "'prompt' must be a string (batched prompts are not simulated)", param="prompt"
        )
    return prompt


def _token_ids(prompt: object) -> list[int] | None:
    """A token-id prompt's ids (vLLM takes them as given), else None."""
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        if any(t < 0 or t >= 1 << 32 for t in prompt):
            raise OpenAIError(400, "token ids must be in [0, 2^32)", param="prompt")
        return prompt
    return None


def parse_request(
    kind: Kind, body: object, *, request_id: str, models: ServedModels, options: Options
) -> ParsedRequest:
    if not isinstance(body, Mapping):
        raise OpenAIError(400, "the request body must be a JSON object")
    lora = models.adapter_for(body.get("model"))
    if _int_field(body, "n", 1) != 1:
        raise OpenAIError(400, "only n=1 is simulated", param="n")
    text = _prompt_text(kind, body)
    prompt = body.get("prompt")
    ids = _token_ids(prompt) if kind == "completion" else None
    prompt_tokens = len(ids) if ids else count_tokens(text)
    if prompt_tokens >= options.max_model_len:
        message = (
            f"This model's maximum context length is {options.max_model_len} tokens. "
            f"However, your request has {prompt_tokens} input tokens."
        )
        raise OpenAIError(400, message, param="messages" if kind == "chat" else "prompt")
    room = options.max_model_len - prompt_tokens
    default = COMPLETIONS_DEFAULT_MAX_TOKENS if kind == "completion" else room
    max_tokens = _int_field(body, "max_completion_tokens", None) if kind == "chat" else None
    max_tokens = max_tokens if max_tokens is not None else _int_field(body, "max_tokens", default)
    assert max_tokens is not None
    if max_tokens < 1 or max_tokens > room:
        raise OpenAIError(
            400, f"'max_tokens' must be between 1 and {room} for this prompt", param="max_tokens"
        )
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, Mapping) and bool(
        stream_options.get("include_usage")
    )
    cache_salt = body.get("cache_salt")
    request = SimRequest.from_text(
        request_id,
        text,
        max_tokens=max_tokens,
        ignore_eos=bool(body.get("ignore_eos", False)),
        min_tokens=_int_field(body, "min_tokens", 0) or 0,
        seed=options.seed,
        mean_output_tokens=options.mean_output_tokens,
        priority=_int_field(body, "priority", 0) or 0,
        lora=lora,
        cache_salt=cache_salt if isinstance(cache_salt, str) else None,
        ids=ids,
    )
    model = body.get("model")
    return ParsedRequest(
        kind,
        model if isinstance(model, str) else models.base,
        bool(body.get("stream")),
        include_usage,
        request,
    )


# ---- answers ---------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class ResponseWriter:
    """Builds the bodies for one request: a full response, or SSE frames token by token."""

    __slots__ = ("_created", "_id", "_kind", "_model", "_object", "_prefix", "include_usage")

    def __init__(self, parsed: ParsedRequest) -> None:
        self._kind = parsed.kind
        self._model = parsed.model
        self._created = int(time.time())
        self.include_usage = parsed.include_usage
        self._id = ("chatcmpl-" if parsed.kind == "chat" else "cmpl-") + parsed.request.request_id
        self._object = "chat.completion" if parsed.kind == "chat" else "text_completion"
        self._prefix = {"id": self._id, "created": self._created, "model": self._model}

    def full(self, completion_tokens: int, finish_reason: str, usage_: dict[str, Any]) -> bytes:
        text = filler(0, completion_tokens)
        if self._kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return orjson.dumps(
            {**self._prefix, "object": self._object, "choices": [choice], "usage": usage_}
        )

    def chunk(self, start: int, count: int, finish_reason: str | None) -> bytes:
        """One SSE frame carrying tokens ``start .. start+count-1`` (several coalesce when late)."""
        text = filler(start, count)
        if self._kind == "chat":
            delta: dict[str, Any] = {"content": text}
            if start == 0:
                delta = {"role": "assistant", "content": text}
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            obj = "text_completion"
        body: dict[str, Any] = {**self._prefix, "object": obj, "choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def usage_chunk(self, usage_: dict[str, Any]) -> bytes:
        obj = "chat.completion.chunk" if self._kind == "chat" else "text_completion"
        return (
            b"data: "
            + orjson.dumps({**self._prefix, "object": obj, "choices": [], "usage": usage_})
            + b"\n\n"
        )
