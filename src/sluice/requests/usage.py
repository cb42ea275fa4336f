"""Token usage from a model server's response body, parsed incrementally as the bytes pass.

Streaming (`text/event-stream`): chunks are scanned as whole SSE lines — a line split across
chunks is carried over (bounded), CRLF and CR endings are accepted. A data line is JSON-decoded
only when a regex finds a `"usage": {` object in it, so the usual per-token chunks cost one C-level
scan each. Usage is read from the object's `usage` (Chat/Completions, `stream_options:
{"include_usage": true}`) or `response.usage` (Responses API `response.completed` events).

When the server sends no usage, completion tokens are estimated from the streamed text (`content`,
`text`, `delta`, `arguments`, reasoning) as ``max(events carrying text, ceil(chars / 4))`` —
every event carries at least one token, and ~4 characters per token is `requests.tokens`'s rule —
and the result is flagged `estimated=True`.

Non-streaming JSON: the body is buffered (capped at `max_buffer_bytes`, 32 MiB by default; past
that usage is given up rather than memory) and decoded once at the end, skipping everything but
`usage` and `choices`.

Field names: `prompt_tokens` / `completion_tokens` (or the Responses API's `input_tokens` /
`output_tokens`); cached tokens from `prompt_tokens_details.cached_tokens`, also accepting
upstream's misspelling `prompt_token_details` and the Responses API's `input_tokens_details`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from sluice.requests.model import Usage
from sluice.requests.tokens import chars_to_tokens

DEFAULT_MAX_BUFFER_BYTES = 32 * 1024 * 1024
# A single SSE line longer than this is dropped (usage lines are a few hundred bytes).
DEFAULT_MAX_LINE_BYTES = 1024 * 1024

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
# At a line start (after LF, CR or the start of the scanned lines), alone on its line.
_DONE = re.compile(rb"(?:^|\r)data:[ \t]*\[DONE\][ \t]*(?=[\r\n]|$)", re.MULTILINE)
_STREAMED_TEXT = re.compile(
    rb'"(?:content|text|delta|arguments|reasoning_content|reasoning)"\s*:\s*'
    rb'"([^"\\]*(?:\\.[^"\\]*)*)"'
)
_CHOICE_TEXT_KEYS = ("content", "text", "reasoning_content")


class _Usage(msgspec.Struct):
    usage: Any = None


class _Choices(msgspec.Struct):
    choices: Any = None


# Two decoders, so the usual body (which reports usage) never builds its `choices` — the whole
# generated text — as Python objects; `choices` is decoded only when there is no usage.
_USAGE_DECODER = msgspec.json.Decoder(_Usage)
_CHOICES_DECODER = msgspec.json.Decoder(_Choices)


class UsageParser:
    """Feed response body chunks in order; read `usage()` at any point, final after the end.

    >>> parser = UsageParser(streaming=True)
    >>> parser.feed(b'data: {"usage": {"prompt_tokens": 5, "completion_tokens": 2}}\\n\\n')
    >>> parser.usage()
    Usage(prompt_tokens=5, completion_tokens=2, cached_tokens=0, estimated=False)
    """

    def __init__(
        self,
        *,
        streaming: bool,
        prompt_tokens_estimate: int = 0,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self.streaming = streaming
        self._prompt_estimate = prompt_tokens_estimate
        self._max_buffer = max_buffer_bytes
        self._max_line = max_line_bytes
        self._reported: Usage | None = None
        self._done = False
        self._finished = False
        # streaming state
        self._partial = b""  # an incomplete trailing line, carried to the next chunk
        self._skipping_line = False  # inside an over-long line: drop until its end
        self._text_events = 0
        self._text_chars = 0
        # JSON state
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._gave_up = False

    @classmethod
    def for_content_type(cls, content_type: str | None, **options: Any) -> UsageParser:
        streaming = content_type is not None and "text/event-stream" in content_type.lower()
        return cls(streaming=streaming, **options)

    @property
    def done(self) -> bool:
        """True once `data: [DONE]` was seen (streaming only)."""
        return self._done

    def feed(self, chunk: bytes) -> None:
        if not chunk or self._finished:
            return
        if self.streaming:
            self._feed_sse(chunk)
        elif not self._gave_up:
            self._buffered += len(chunk)
            if self._buffered > self._max_buffer:
                self._gave_up, self._chunks = True, []
            else:
                self._chunks.append(chunk)

    def finish(self) -> Usage | None:
        """The end of the body: flush what is pending and return the final usage."""
        if not self._finished:
            self._finished = True
            if self.streaming:
                tail, self._partial = self._partial, b""
                if tail and not self._skipping_line:
                    self._scan_lines(tail)
            elif not self._gave_up:
                body, self._chunks = b"".join(self._chunks), []
                self._parse_json_body(body)
        return self.usage()

    def usage(self) -> Usage | None:
        """Reported usage if any; else an estimate from streamed text; else None."""
        if self._reported is not None:
            return self._reported
        if self._text_events:
            completion = max(self._text_events, chars_to_tokens(self._text_chars))
            return Usage(
                prompt_tokens=self._prompt_estimate, completion_tokens=completion, estimated=True
            )
        return None

    # --- SSE ------------------------------------------------------------------------------------

    def _feed_sse(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if self._skipping_line:
            if cut == 0:
                return
            first_end = _first_line_end(data)
            data, cut = data[first_end:], cut - first_end
            self._skipping_line = False
        if cut == 0:
            self._hold(data)
            return
        self._hold(data[cut:])
        self._scan_lines(data[:cut])

    def _hold(self, partial: bytes) -> None:
        if len(partial) > self._max_line:
            self._partial, self._skipping_line = b"", True
        else:
            self._partial = partial

    def _scan_lines(self, lines: bytes) -> None:
        """Whole lines only. Regexes find the few lines worth decoding."""
        for match in _STREAMED_TEXT.finditer(lines):
            if match.end(1) > match.start(1):
                self._text_events += 1
                self._text_chars += _char_count(match.group(1))
        # `in` (a C substring search) gates the regexes: most chunks have neither.
        if not self._done and b"[DONE]" in lines and _DONE.search(lines):
            self._done = True
        if b'"usage"' not in lines:
            return
        decoded_line = -2
        for match in _USAGE_OBJECT.finditer(lines):
            start = max(lines.rfind(b"\n", 0, match.start()), lines.rfind(b"\r", 0, match.start()))
            if start == decoded_line:
                continue  # a second "usage" (e.g. nested) in a line already decoded
            decoded_line = start
            end = _first_line_end(lines, match.end())
            usage = _usage_of_data_line(lines[start + 1 : end])
            if usage is not None:
                self._reported = usage

    # --- JSON -----------------------------------------------------------------------------------

    def _parse_json_body(self, body: bytes) -> None:
        try:
            self._reported = usage_from_json(_USAGE_DECODER.decode(body).usage)
            if self._reported is not None:
                return
            choices = _CHOICES_DECODER.decode(body).choices
        except (msgspec.DecodeError, UnicodeDecodeError):
            return  # not JSON (an error page?): no usage, and the bytes pass through anyway
        if isinstance(choices, list):
            for choice in choices:
                self._count_choice_text(choice)

    def _count_choice_text(self, choice: Any) -> None:
        if not isinstance(choice, dict):
            return
        message = choice.get("message")
        holder: dict[str, Any] = message if isinstance(message, dict) else choice
        for key in _CHOICE_TEXT_KEYS:
            text = holder.get(key)
            if isinstance(text, str) and text:
                self._text_events += 1
                self._text_chars += len(text)


def usage_from_json(usage: Any) -> Usage | None:
    """A decoded `usage` object → `Usage`, or None if it holds no token counts."""
    if not isinstance(usage, dict):
        return None
    prompt = _first_int(usage, "prompt_tokens", "input_tokens")
    completion = _first_int(usage, "completion_tokens", "output_tokens")
    if prompt is None and completion is None:
        return None
    cached = 0
    for key in ("prompt_tokens_details", "prompt_token_details", "input_tokens_details"):
        details = usage.get(key)
        if isinstance(details, dict) and (found := _first_int(details, "cached_tokens")):
            cached = found
            break
    return Usage(prompt_tokens=prompt or 0, completion_tokens=completion or 0, cached_tokens=cached)


def _usage_of_data_line(line: bytes) -> Usage | None:
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    try:
        event = msgspec.json.decode(line[5:])
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict):
        return None
    usage = usage_from_json(event.get("usage"))
    response = event.get("response")
    if usage is None and isinstance(response, dict):
        usage = usage_from_json(response.get("usage"))
    return usage


def _first_int(mapping: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _first_line_end(data: bytes, start: int = 0) -> int:
    """Offset just past the first line ending at or after `start` (or len(data))."""
    ends = [i for i in (data.find(b"\n", start), data.find(b"\r", start)) if i >= 0]
    return min(ends) + 1 if ends else len(data)


def _char_count(raw: bytes) -> int:
    """Characters of a raw JSON string body — not UTF-8 bytes, and `\u6a21` is one character."""
    if b"\\" in raw:
        try:
            return len(msgspec.json.decode(b'"' + raw + b'"'))
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
    return len(raw.decode("utf-8", "replace"))
