"""Base-128 varints (LEB128): protobuf's integers, and the continuation bytes of HPACK's."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """`value` (>= 0) in 7-bit groups, least significant first, the high bit set on every
    group but the last."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
