"""The OTLP encoder's native part (`tracing/_otlp.c`) makes, byte for byte, what the Python
encoder makes of the same requests' spans — whatever their values: text that is not UTF-8,
negative, 64-bit and larger ints (beyond OTLP's int64: their digits, as text), floats, arrays,
unknown values, errors, incoming parents — and hands a request back to it where a value is of
a type it does not encode itself."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanContext, TraceFlags

from sluice.tracing import otlp
from sluice.tracing.spans import Spans, request_spans
from tracing.test_encoding import finished_receipts

NATIVE = otlp.NATIVE
needs_native = pytest.mark.skipif(NATIVE is None, reason="the OTLP extension is not built")
RESOURCE = {"service.name": "sluice", "host.name": "h\udc80st"}
OFFSET_NS = 1_700_000_000 * 10**9


def test_the_extension_is_built_where_a_compiler_is() -> None:
    """`make` builds it (setup.py); without it tracing works, at twice the CPU a request."""
    assert NATIVE is not None
    assert type(tiny_tree()).__name__ == "Tree"


def tiny_tree() -> object:
    """A root and one fixed child, which shares the common attributes (as upstream's plugin
    spans do)."""
    assert NATIVE is not None
    return NATIVE.Tree(
        [-1, 0],
        [0, 1, 0, 2],
        [False, True],
        [None, b"tail"],
        [b"\x2a\x01r", b""],
        [(b"\x0a\x01o",), ()],
        (b"\x0a\x01i", b"\x0a\x01m"),
    )


@contextmanager
def python_only() -> Iterator[None]:
    saved, otlp.NATIVE = otlp.NATIVE, None
    try:
        yield
    finally:
        otlp.NATIVE = saved


def both(traces: list[otlp.Trace], seed: int) -> tuple[bytes, bytes]:
    native = otlp.Encoder(RESOURCE, "sluice", OFFSET_NS).encode(traces, random.Random(seed))[0]
    with python_only():
        python = otlp.Encoder(RESOURCE, "sluice", OFFSET_NS).encode(traces, random.Random(seed))
    return native, python[0]


texts = st.text(max_size=12) | st.sampled_from(["", "e\udcff", "\ud800x"])
ints = st.integers(-(2**63), 2**63 - 1) | st.integers(0, 200) | st.integers(2**64, 2**70)
values = st.none() | texts | st.booleans() | ints | st.floats(allow_nan=False)
values |= st.builds(range, st.integers(0, 3))  # a sequence the extension leaves to Python
values |= st.tuples(texts, texts) | st.lists(st.floats(allow_nan=False), max_size=3).map(tuple)


@st.composite
def requests(draw: st.DrawFn, trees: list[Spans]) -> otlp.Trace:
    """One of the real span trees (its form), with drawn instants, values and status."""
    tree = draw(st.sampled_from(trees))
    open_shapes = [s for s, fixed in zip(tree.form.shapes, tree.form.fixed) if fixed is None]
    own = [tuple(draw(values) for _ in shape.keys) for shape in open_shapes]
    instants = draw(
        st.lists(st.floats(0, 1e6), min_size=len(tree.instants), max_size=len(tree.instants))
    )
    error = draw(st.none() | texts)
    parent = draw(
        st.none()
        | st.builds(
            SpanContext,
            st.integers(1, 2**128 - 1),
            st.integers(1, 2**64 - 1),
            st.booleans(),
            st.just(TraceFlags(1)),
        )
    )
    trace_id = parent.trace_id if parent is not None else draw(st.integers(1, 2**128 - 1))
    return otlp.Trace(Spans(tree.form, instants, own, error), trace_id, parent)


@pytest.fixture(scope="module")
def trees() -> list[Spans]:
    import asyncio

    return [request_spans(r) for r in asyncio.run(finished_receipts())]


@needs_native
def test_every_real_tree_encodes_to_the_same_bytes(trees: list[Spans]) -> None:
    traces = [otlp.Trace(t, 1000 + i, None) for i, t in enumerate(trees)]
    native, python = both(traces, 7)
    assert native == python
    spans = ExportTraceServiceRequest.FromString(native).resource_spans[0].scope_spans[0].spans
    assert len(spans) == sum(len(t.form) for t in trees)


@needs_native
@settings(max_examples=300, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_any_values_encode_to_the_same_bytes(
    trees: list[Spans], data: st.DataObject, seed: int
) -> None:
    batch = data.draw(st.lists(requests(trees), min_size=1, max_size=4))
    native, python = both(batch, seed)
    assert native == python
    ExportTraceServiceRequest.FromString(native)  # and it is a well-formed message


@needs_native
def test_a_request_with_a_value_of_another_type_is_left_to_the_python_encoder() -> None:
    tree = tiny_tree()
    args = [bytes(16), [0.0, 1.0, 2.0], 0, bytes(16)]
    out = bytearray()
    assert tree.append(out, *args, [("r-1", "m", range(2))], None, b"", False) is False  # type: ignore[attr-defined]
    assert out == bytearray()  # nothing of it
    assert tree.append(out, *args, [("r-1", "m", 2**64)], None, b"", False) is True  # type: ignore[attr-defined]
    assert str(2**64).encode() in out


def test_an_int_beyond_int64_goes_as_its_digits() -> None:
    """OTLP's ints are int64 (the SDK's encoder fails the whole export on a larger one)."""
    assert otlp._value(2**63 - 1) == b"\x18" + otlp._varint(2**63 - 1)
    assert otlp._value(2**63) == b"\x0a\x13" + str(2**63).encode()
    assert otlp._value(-(2**63) - 1) == b"\x0a\x14" + str(-(2**63) - 1).encode()


@needs_native
def test_a_wrong_argument_is_an_error_that_names_it() -> None:
    tree = tiny_tree()
    args = [bytearray(), bytes(16), [0.0, 1.0, 2.0], 0, bytes(16), [("r", "m", 1)], None, b"", 0]
    assert tree.append(*args) is True  # type: ignore[attr-defined]
    for at, wrong, says in [
        (0, b"", "out is a bytearray"),
        (1, bytes(8), "ids is 16 bytes"),
        (2, [0.0], "as many as the form has"),
        (4, bytes(8), "trace_id is 16 bytes"),
        (5, [("r", "m"), ()], "values is a list of the 1 open spans'"),
        (6, 3, "error is a str"),
        (7, bytes(4), "parent_id is 8 bytes"),
    ]:
        with pytest.raises((TypeError, ValueError), match=says):
            tree.append(*args[:at], wrong, *args[at + 1 :])  # type: ignore[attr-defined]
    assert NATIVE is not None
    common = (b"\x0a\x01i",)
    with pytest.raises(ValueError, match="index 1 is outside"):  # its own parent
        NATIVE.Tree([-1, 1], [0, 1, 0, 1], [0, 0], [None, b""], [b"", b""], [(), ()], common)
    with pytest.raises(TypeError, match="a tail is bytes"):
        NATIVE.Tree([-1, 0], [0, 1, 0, 1], [0, 0], [None, "text"], [b"", b""], [(), ()], common)
    with pytest.raises(ValueError, match="a head and keys per span"):
        NATIVE.Tree([-1, 0], [0, 1], [0, 0], [None, b""], [b"", b""], [(), ()], common)
