"""Bytes-preserving edits of a JSON request body ("bytes in, bytes out").

Upstream re-encodes the whole body through a generic map, which reorders keys, escapes `<>&` and
turns integers above 2^53 into floats. We instead locate the value of a *top-level* member and
splice new bytes in its place; every other byte is forwarded untouched.

Locating it walks the top-level members only. Each member value is *skipped* with the stdlib's
C JSON scanner (`raw_decode` returns where a value ends; the decoded value is discarded, so no
number is ever re-encoded), and the walk stops as soon as no later key could be another `name`.
Bodies that scanner refuses (integers over Python's 4300-digit limit, very deep nesting) fall
back to a regex tokenizer that tracks only strings, brackets, `:` and `,`. Both trust that the
body is valid JSON: callers parse it first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import msgspec

# A JSON string (unrolled-loop form: fast on long strings) or one structural character.
# Numbers, literals and whitespace never match, so they are skipped without a Python step.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]', re.DOTALL)
_WHITESPACE = b" \t\r\n"
_TEXT_WHITESPACE = re.compile(r"[ \t\r\n]*")
_DECODER = json.JSONDecoder()
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def rewrite_model(body: bytes, new_model: str) -> bytes:
    """`body` with the top-level `"model"` value replaced by `new_model`; nothing else changes."""
    return set_top_level_field(body, "model", msgspec.json.encode(new_model), insert=False)


def set_top_level_field(body: bytes, name: str, json_value: bytes, *, insert: bool = True) -> bytes:
    """Replace the value of every top-level member called `name` with `json_value`.

    Every occurrence is replaced because JSON parsers disagree on duplicate keys (most keep the
    last, some the first); after the edit they all see the same value. If the member is absent
    and `insert` is true, it is inserted right after the opening brace. `json_value` must be one
    valid JSON value (checked: a malformed splice would corrupt the forwarded request).
    """
    try:
        msgspec.json.decode(json_value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a JSON value: {json_value[:64]!r}") from exc
    spans = member_value_spans(body, name)
    if spans:
        return _splice(body, spans, json_value)
    if not insert:
        return body
    brace = _opening_brace(body)
    member = msgspec.json.encode(name) + b":" + json_value
    rest = body[brace + 1 :]
    separator = b"" if rest.lstrip(_WHITESPACE).startswith(b"}") else b","
    return body[: brace + 1] + member + separator + rest


def member_value_spans(body: bytes, name: str) -> list[tuple[int, int]]:
    """`(start, end)` byte offsets of each top-level member value whose key decodes to `name`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("body is not UTF-8") from exc
    try:
        spans = _spans_by_member_walk(text, name)
    except RecursionError:
        return list(_spans_by_tokens(body, name))
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise ValueError(f"body is not a valid JSON object: {exc}") from None
        return list(_spans_by_tokens(body, name))  # e.g. int_max_str_digits exceeded
    if body.isascii():
        return spans
    # str offsets → UTF-8 byte offsets (only for the few spans found).
    return [(len(text[:a].encode()), len(text[:b].encode())) for a, b in spans]


def _spans_by_member_walk(text: str, name: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    raw_name = json.dumps(name, ensure_ascii=False)
    plain = _PLAIN_NAME.fullmatch(name) is not None  # spellable otherwise only with `\uXXXX`
    pos = _skip_text_whitespace(text, 0)
    # Checking both ends up front keeps the early return below from accepting a truncated body.
    if not (text.startswith("{", pos) and text.rstrip(" \t\r\n").endswith("}")):
        raise json.JSONDecodeError("expected a JSON object", text, pos)
    pos = _skip_text_whitespace(text, pos + 1)
    if text.startswith("}", pos):
        return spans
    while True:
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_text_whitespace(text, pos)
        if not (isinstance(key, str) and text.startswith(":", pos)):
            raise json.JSONDecodeError("expected a key and ':'", text, pos)
        start = _skip_text_whitespace(text, pos + 1)
        _, end = _DECODER.raw_decode(text, start)  # only the end matters; the value is dropped
        if key == name:
            spans.append((start, end))
            # A duplicate key needs its plain spelling, or a `\u` escape, after this value.
            if plain and text.find(raw_name, end) < 0 and not _has_unicode_escape(text, end):
                return spans
        pos = _skip_text_whitespace(text, end)
        if text.startswith(",", pos):
            pos = _skip_text_whitespace(text, pos + 1)
        elif text.startswith("}", pos):
            return spans
        else:
            raise json.JSONDecodeError("expected ',' or '}'", text, pos)


def _has_unicode_escape(text: str, start: int) -> bool:
    # Hopping between backslashes is much faster than `text.find("\\u")`: CPython's search for
    # a two-character needle ending in a common letter crawls.
    slash = text.find("\\", start)
    while slash >= 0:
        if text.startswith("u", slash + 1):
            return True
        slash = text.find("\\", slash + 2)
    return False


def _skip_text_whitespace(text: str, pos: int) -> int:
    match = _TEXT_WHITESPACE.match(text, pos)
    return pos if match is None else match.end()


def _spans_by_tokens(body: bytes, name: str) -> Iterator[tuple[int, int]]:
    """The fallback: a regex tokenizer over the whole body (slower, but no limits)."""
    depth = 0
    key: bytes | None = None  # raw bytes (quotes included) of the last key seen at depth 1
    expecting_key = False
    value_start = -1  # >= 0 while inside the value of a depth-1 member named `name`
    raw_name = msgspec.json.encode(name)
    brace = _opening_brace(body)
    for match in _TOKEN.finditer(body, brace):
        token = match.group()
        if token[0] == 0x22:  # '"': a string
            if depth == 1 and expecting_key:
                key = token
                expecting_key = False
            continue
        if token in b"{[":
            depth += 1
            if depth == 1:
                expecting_key = True
            continue
        if depth == 1 and token == b":":
            if key is not None and _key_equals(key, raw_name, name):
                value_start = _skip_whitespace(body, match.end())
            continue
        if depth == 1 and token in (b",", b"}"):
            if value_start >= 0:
                yield value_start, _rstrip_whitespace(body, match.start())
                value_start = -1
            key = None
            expecting_key = True
            if token == b"}":
                return
            continue
        if token in b"}]":
            depth -= 1
    raise ValueError("unterminated JSON object")


def _key_equals(raw_key: bytes, raw_name: bytes, name: str) -> bool:
    if raw_key == raw_name:
        return True
    # A key may spell the name with escapes (`"mod\u0065l"`); parsers see it as the same key.
    return b"\\" in raw_key and msgspec.json.decode(raw_key) == name


def _opening_brace(body: bytes) -> int:
    start = _skip_whitespace(body, 0)
    if start >= len(body) or body[start] != 0x7B:  # '{'
        raise ValueError("body is not a JSON object")
    return start


def _skip_whitespace(body: bytes, pos: int) -> int:
    end = len(body)
    while pos < end and body[pos] in _WHITESPACE:
        pos += 1
    return pos


def _rstrip_whitespace(body: bytes, pos: int) -> int:
    while pos > 0 and body[pos - 1] in _WHITESPACE:
        pos -= 1
    return pos


def _splice(body: bytes, spans: list[tuple[int, int]], replacement: bytes) -> bytes:
    parts: list[bytes] = []
    previous = 0
    for start, end in spans:
        parts.append(body[previous:start])
        parts.append(replacement)
        previous = end
    parts.append(body[previous:])
    return b"".join(parts)
