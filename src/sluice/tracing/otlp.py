"""Requests' spans (`spans.Spans`) straight into the bytes of one OTLP `ExportTraceServiceRequest`
(opentelemetry-proto's message, protobuf wire format): the message the SDK's encoder makes of
the equivalent `ReadableSpan`s (tests/tracing decodes both and compares them field for field).
What repeats is kept encoded: the resource and scope from the start, each shape's name, kind
and keys, the attributes seen lately, and per span form (`_FormCode`) the whole tails of the
spans the form fixes (the profiles', the filter chains', the scorers': all but their ids, times
and common attributes), in tables emptied when they outgrow their bounds. A request's spans
then cost a few calls whatever their number: its span ids and times are placed with one
`struct` pack for all its children, and only the spans the form leaves open (the root, the
queue wait, the picks, the dispatch, the response) are encoded one by one.

`Trace` is what the batch thread has of one request: its spans, trace id, and the incoming
parent (a `traceparent`), if any. Span ids: one `randbytes` per trace, eight bytes a span (the
chance that one is all zeros, which OTLP calls invalid, is 2^-64 a span).

Where the extension `_otlp.c` is built (`NATIVE`; `SLUICE_OTLP_NATIVE=0` turns it off), it
encodes each request's spans in one call (`Tree.append`, beside what the form fixes: ids,
times, attributes, status, flags) — the same bytes (tests/tracing/test_otlp_native.py), at a
fraction of the CPU (`benchmarks/tracing_batch_cost.py`); a request with a value of a type it
does not encode (not a str, bool, int, float, tuple or list) goes through the Python encoder.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any, NamedTuple

from opentelemetry.trace import SpanContext

from sluice.tracing.spans import (
    COMMON,
    REQUEST,
    Form,
    Shape,
    Spans,
    Value,
    Values,
    native_part,
    utf8,
)

# opentelemetry-proto's numbers: Span.SpanKind, Status.StatusCode, SpanFlags
_KIND_INTERNAL, _KIND_SERVER = 1, 2
_STATUS_ERROR = 2
_LOCAL = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_REMOTE = 0x300  # ... | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_CACHED_ATTRIBUTES = 4096  # the table is emptied when it grows past this
_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano (7), end_time_unix_nano (8): fixed64
_DOUBLE = struct.Struct("<d")
_FLAGS = struct.Struct("<I")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


NATIVE: Any = native_part("sluice.tracing._otlp")


class Trace(NamedTuple):
    spans: Spans
    trace_id: int
    parent: SpanContext | None


def span_ids(rng: random.Random, count: int) -> bytes:
    """Eight random bytes per span of a trace, drawn at once (the ReadableSpan path draws the
    same)."""
    return rng.randbytes(8 * count)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte (field number < 16), length, payload."""
    n = len(payload)
    return bytes((tag, n)) + payload if n < 0x80 else bytes((tag,)) + _varint(n) + payload


def _value(value: Any) -> bytes:
    """An `AnyValue` (str, bool, int, float, or a sequence of them), as the SDK encodes."""
    if isinstance(value, str):
        return _field(0x0A, utf8(value))  # string_value = 1
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"  # bool_value = 2
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:  # beyond OTLP's int64: its digits, as text
            return _field(0x0A, str(value).encode())
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))  # int_value = 3
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)  # double_value = 4
    # array_value = 5: ArrayValue.values = 1, one field per item
    return _field(0x2A, b"".join(_field(0x0A, _value(v)) for v in value))


def _key_value(key: str, value: Any) -> bytes:
    """A `KeyValue`: key = 1, value = 2."""
    return _field(0x0A, utf8(key)) + _field(0x12, _value(value))


class _Layout(NamedTuple):
    """What an encoder keeps of a shape: name = 5 with kind = 6, each attribute key's field
    (KeyValue.key = 1), whether the request's common attributes come first."""

    head: bytes
    keys: tuple[bytes, ...]
    common: bool


class Encoder:
    """One per tracer: the resource and scope are fixed for its life. A shape is the root's
    (`spans.REQUEST`) or never: its kind is fixed when first seen."""

    def __init__(self, resource: Mapping[str, Any], scope: str, offset_ns: int) -> None:
        self.offset_ns = offset_ns  # the director's monotonic clock -> Unix nanoseconds
        # ResourceSpans.resource = 1: Resource.attributes = 1
        resource_body = b"".join(_field(0x0A, _key_value(k, v)) for k, v in resource.items())
        self._resource = _field(0x0A, resource_body)
        self._scope = _field(0x0A, _field(0x0A, utf8(scope)))  # ScopeSpans.scope.name
        self._layouts: dict[Shape, _Layout] = {}
        self._blocks: dict[tuple[Shape, tuple[Value | None, ...]], bytes] = {}
        self._attributes: dict[tuple[bytes, type, Value], bytes] = {}
        self._common = tuple(_field(0x0A, utf8(k)) for k in COMMON)
        self._codes: dict[Form, _FormCode] = {}

    def _layout(self, shape: Shape, root: bool) -> _Layout:
        kind = _KIND_SERVER if root else _KIND_INTERNAL
        head = _field(0x2A, utf8(shape.name)) + bytes((0x30, kind))
        keys = tuple(_field(0x0A, utf8(k)) for k in shape.keys)
        if shape is REQUEST:  # its first two are the common ones, encoded once per request
            keys = keys[2:]
        layout = self._layouts[shape] = _Layout(head, keys, shape.common or shape is REQUEST)
        return layout

    def _values(self, keys: tuple[bytes, ...], values: tuple[Value | None, ...]) -> bytes:
        """attributes = 9, one `KeyValue` each (KeyValue.value = 2), the unknown ones left out;
        from the table when seen lately (floats, rarely seen twice, are not kept)."""
        table = self._attributes
        out = []
        for key, value in zip(keys, values):
            if value is None:
                continue
            if type(value) is float:  # KeyValue.value = 2: AnyValue.double_value = 4
                kv = key + b"\x12\x09\x21" + _DOUBLE.pack(value)
                out.append(bytes((0x4A, len(kv))) + kv)
                continue
            cache_key = (key, type(value), value)  # 1 and True are equal; encodings are not
            encoded = table.get(cache_key)
            if encoded is None:
                if len(table) >= _CACHED_ATTRIBUTES:
                    table.clear()
                encoded = table[cache_key] = _field(0x4A, key + _field(0x12, _value(value)))
            out.append(encoded)
        return b"".join(out)

    def _child_tail(self, layout: _Layout, values: tuple[Value | None, ...]) -> bytes:
        """A child's span after its ids, times and common attributes: name, kind, its own
        attributes, flags (a local parent)."""
        return layout.head + self._values(layout.keys, values) + _FLAGS_LOCAL

    def _kept_tail(self, shape: Shape, values: tuple[Value | None, ...]) -> bytes:
        """`_child_tail` of a repeating shape's span, kept in the table."""
        blocks = self._blocks
        if len(blocks) >= _CACHED_ATTRIBUTES:
            blocks.clear()
        layout = self._layouts.get(shape) or self._layout(shape, False)
        tail = blocks[shape, values] = self._child_tail(layout, values)
        return tail

    def encode(self, traces: Iterable[Trace], rng: random.Random) -> tuple[bytes | bytearray, int]:
        """The serialized request and its number of spans. Span ids are drawn from `rng`.
        Fields go in the order that lets the constant ones be kept together (a decoder takes
        them in any order; only the attributes' own order is kept: the common ones first)."""
        if NATIVE is None:
            spans, count = self._joined(traces, rng)
            return self._envelope(len(spans)) + spans, count
        placed, count = self._placed(traces, rng)
        # in place: a batch is ~0.5 MB, and a copy of it into a new object costs more than
        # encoding its spans
        placed[0:0] = self._envelope(len(placed))
        return placed, count

    def _envelope(self, spans_size: int) -> bytes:
        """What goes before a batch's spans: the ResourceSpans field with its resource, and
        the start of its scope_spans = 2 (the scope, then the spans)."""
        scope_field = b"\x12" + _varint(len(self._scope) + spans_size) + self._scope
        size = len(self._resource) + len(scope_field) + spans_size
        return b"\x0a" + _varint(size) + self._resource + scope_field

    def _placed(self, traces: Iterable[Trace], rng: random.Random) -> tuple[bytearray, int]:
        """The spans, each request's encoded by the extension in one call."""
        out = bytearray()
        codes, offset = self._codes, self.offset_ns
        count = 0
        for trace in traces:
            (form, instants, values, error), trace_id, parent = trace
            code = codes.get(form) or self._code(form)
            ids = span_ids(rng, code.spans)
            up_id, remote = b"", False
            if parent is not None:
                up_id, remote = parent.span_id.to_bytes(8, "big"), parent.is_remote
            trace_bytes = trace_id.to_bytes(16, "big")
            if not code.tree.append(
                out, ids, instants, offset, trace_bytes, values, error, up_id, remote
            ):
                out += b"".join(self._pieces(trace, code, ids))  # a value it leaves to Python
            count += code.spans
        return out, count

    def _joined(self, traces: Iterable[Trace], rng: random.Random) -> tuple[bytes, int]:
        """The spans, each request's as a few joined pieces."""
        out: list[bytes] = []
        codes = self._codes
        count = 0
        for trace in traces:
            code = codes.get(trace.spans.form) or self._code(trace.spans.form)
            out += self._pieces(trace, code, span_ids(rng, code.spans))
            count += code.spans
        return b"".join(out), count

    def _pieces(self, trace: Trace, code: _FormCode, span_ids: bytes) -> list[bytes]:
        """One request's spans, as pieces to join."""
        (form, instants, values, error), trace_id, parent = trace
        prefixes = _SPAN_PREFIXES
        ids = code.ids(span_ids)
        # the director's monotonic seconds -> Unix nanoseconds, as the SDK's path has them
        offset = self.offset_ns
        ns = [int(t * 1e9) + offset for t in instants]
        trace_bytes = trace_id.to_bytes(16, "big")
        common = self._values(self._common, values[0][:2])
        # the children's ids and times, packed at once, then cut into one block a span
        fields = code.fields.copy()
        fields[1::_CHILD_ARGS] = [trace_bytes] * code.children
        fields[3::_CHILD_ARGS] = ids[1:]
        fields[5::_CHILD_ARGS] = code.parents(ids)
        fields[7::_CHILD_ARGS] = code.starts(ns)
        fields[9::_CHILD_ARGS] = code.ends(ns)
        heads = (code.heads.get(len(common)) or code.heads_for(len(common))).copy()
        tails = code.tails.copy()
        for (i, shape, _), tail in zip(code.open, self._open_tails(code, values)):
            tails[i] = tail
            size = _CHILD_SIZE + (len(common) if shape.common else 0) + len(tail)
            heads[i] = prefixes[size] if size < _PREFIXED else b"\x12" + _varint(size)
        pieces = code.pieces.copy()  # per child: its field's tag and length, ids and
        pieces[0::4] = heads  # times, the common attributes (or none), the rest
        pieces[1::4] = code.cut(code.pack(*fields))
        pieces[2::4] = code.commons((common, b""))
        pieces[3::4] = tails
        # the root: its parent is the incoming one (or none), its status the request's
        tail, up_id = self._root(form.shapes[0], values[0], error, common, parent)
        if up_id:
            up_id = b"\x22\x08" + up_id  # parent_span_id = 4
        size = _IDS_AND_TIMES + len(up_id) + len(tail)
        return [
            prefixes[size] if size < _PREFIXED else b"\x12" + _varint(size),
            b"\x0a\x10" + trace_bytes + b"\x12\x08" + ids[0],
            up_id,
            _TIMES.pack(0x39, ns[code.root_start], 0x41, ns[code.root_end]),
            tail,
            *pieces,
        ]

    def _open_tails(self, code: _FormCode, values: list[Values]) -> list[bytes]:
        """The tails of the children the form leaves open, in order (`values[0]`: the root's)."""
        blocks, child_tail = self._blocks, self._child_tail
        tails = []
        for (_, shape, layout), own in zip(code.open, values[1:]):
            if shape.repeats:
                tails.append(blocks.get((shape, own)) or self._kept_tail(shape, own))
            else:
                tails.append(child_tail(layout, own))
        return tails

    def _code(self, form: Form) -> _FormCode:
        if len(self._codes) >= _CACHED_FORMS:
            self._codes.clear()
        tails = []  # the children's: fixed, or placed per request (the open ones)
        open_children = []
        for i, (shape, values) in enumerate(zip(form.shapes[1:], form.fixed[1:])):
            layout = self._layouts.get(shape) or self._layout(shape, False)
            tails.append(b"" if values is None else self._child_tail(layout, values))
            if values is None:
                open_children.append((i, shape, layout))
        tree = self._tree(form, tails)
        code = self._codes[form] = _FormCode(form, tails, tuple(open_children), tree)
        return code

    def _tree(self, form: Form, tails: list[bytes]) -> Any:
        """The extension's copy of what the form fixes (`_otlp.Tree`); None without it."""
        if NATIVE is None:
            return None
        layouts = [
            self._layouts.get(shape) or self._layout(shape, i == 0)
            for i, shape in enumerate(form.shapes)
        ]
        return NATIVE.Tree(
            form.parents,
            form.bounds,
            [s.common for s in form.shapes],
            [None, *(None if f is None else t for f, t in zip(form.fixed[1:], tails))],
            [layout.head for layout in layouts],
            [layout.keys for layout in layouts],
            self._common,
        )

    def _root(
        self,
        shape: Shape,
        values: tuple[Value | None, ...],
        error: str | None,
        common: bytes,
        parent: SpanContext | None,
    ) -> tuple[bytes, bytes]:
        """The root's tail (name, kind, the common attributes and its own, status, flags) and
        its parent's span id (b"" without an incoming parent)."""
        layout = self._layouts.get(shape) or self._layout(shape, True)
        own = values[2:]  # after the common ones: objective, band, tenant, outcome, endpoint
        block = self._blocks.get((shape, own))
        if block is None:
            if len(self._blocks) >= _CACHED_ATTRIBUTES:
                self._blocks.clear()
            block = self._blocks[shape, own] = self._values(layout.keys, own)
        # status = 15: message = 2, code = 3 (ERROR)
        status = b"" if error is None else _field(0x7A, _field(0x12, utf8(error)) + b"\x18\x02")
        if parent is None:
            return layout.head + common + block + status + _FLAGS_LOCAL, b""
        flags = _FLAGS_REMOTE if parent.is_remote else _FLAGS_LOCAL
        return layout.head + common + block + status + flags, parent.span_id.to_bytes(8, "big")


class _FormCode:
    """What an encoder keeps of one `spans.Form`: how to place a request's span ids and times
    (one `struct` pack for all its children), and the children's fixed tails (name, kind,
    attributes, flags) with the field prefixes they take beside common attributes of each
    length. Every form has the orchestration and the queue wait: two children at least, so
    `itemgetter` gives tuples."""

    def __init__(
        self,
        form: Form,
        tails: list[bytes],
        open_children: tuple[tuple[int, Shape, _Layout], ...],
        tree: Any,
    ) -> None:
        self.spans = n = len(form)
        self.children = m = n - 1
        self.ids = struct.Struct("8s" * n).unpack  # the span ids drawn for the trace, cut
        self.parents = itemgetter(*form.parents[1:])
        self.starts = itemgetter(*form.bounds[2::2])
        self.ends = itemgetter(*form.bounds[3::2])
        self.root_start, self.root_end = form.bounds[0], form.bounds[1]
        self.fields = _CHILD_FIELDS * m
        self.pack = struct.Struct("<" + _CHILD * m).pack
        self.cut = struct.Struct(f"{_CHILD_SIZE}s" * m).unpack
        self.commons = itemgetter(*(0 if s.common else 1 for s in form.shapes[1:]))
        self.tails = tails
        self.open = open_children
        self.tree = tree  # the extension's copy (None without it)
        self.pieces: list[bytes] = [b""] * (4 * m)
        self._common = [s.common for s in form.shapes[1:]]
        self.heads: dict[int, list[bytes]] = {}  # by the common attributes' length

    def heads_for(self, common: int) -> list[bytes]:
        """The fixed children's field prefixes (tag and length) beside common attributes of
        this length (the open ones' are the request's)."""
        if len(self.heads) >= _CACHED_HEADS:
            self.heads.clear()
        sizes = [
            _CHILD_SIZE + (common if shared else 0) + len(tail)
            for shared, tail in zip(self._common, self.tails)
        ]
        heads = self.heads[common] = [
            _SPAN_PREFIXES[n] if n < _PREFIXED else b"\x12" + _varint(n) for n in sizes
        ]
        return heads


_PREFIXED = 2048  # spans up to this size take their field's tag and length from a table
# a span's trace_id and span_id fields (2 + 16 + 2 + 8 bytes) and its two fixed64 times (2 x 9)
_IDS_AND_TIMES = 28 + _TIMES.size
_SPAN_PREFIXES = [b"\x12" + _varint(n) for n in range(_PREFIXED)]
# flags = 16 (fixed32): its tag takes two bytes
_FLAGS_LOCAL = b"\x85\x01" + _FLAGS.pack(_LOCAL)
_FLAGS_REMOTE = b"\x85\x01" + _FLAGS.pack(_REMOTE)
# a child's ids and times: trace_id = 1, span_id = 2, parent_span_id = 4 (each its tag, length
# and bytes), start_time_unix_nano = 7, end_time_unix_nano = 8 (fixed64); the tags are constant
_CHILD = "2s16s2s8s2s8sBQBQ"
_CHILD_FIELDS: list[bytes | int | None] = [b"\x0a\x10", None, b"\x12\x08", None, b"\x22\x08", None]
_CHILD_FIELDS += [0x39, None, 0x41, None]
_CHILD_ARGS = len(_CHILD_FIELDS)
_CHILD_SIZE = struct.calcsize("<" + _CHILD)
_CACHED_FORMS = 256
_CACHED_HEADS = 64
