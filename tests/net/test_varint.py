"""One base-128 varint serves protobuf's integers and HPACK's: both read back as the libraries
that define them write them."""

from __future__ import annotations

from google.protobuf.internal.encoder import _VarintBytes
from hpack.hpack import encode_integer
from hypothesis import given
from hypothesis import strategies as st

from sluice.net.frames import _hpack_int
from sluice.net.varint import varint

VALUES = st.integers(min_value=0, max_value=2**40)


@given(VALUES)
def test_a_varint_is_protobufs(value: int) -> None:
    assert varint(value) == _VarintBytes(value)


@given(VALUES, st.integers(min_value=1, max_value=8))
def test_an_hpack_integer_is_the_hpack_librarys(value: int, prefix_bits: int) -> None:
    assert _hpack_int(value, prefix_bits) == bytes(encode_integer(value, prefix_bits))
