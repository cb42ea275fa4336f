"""The bounded ring of finished receipts: at most `max_entries`, and at most `max_bytes` of
encoded receipts plus a fixed per-entry overhead — the oldest go first.

A receipt is encoded (orjson) once, when it is added: the ring then holds immutable bytes whose
size is known exactly, so the memory bound is a sum, not an estimate of nested objects. The few
fields queries filter on are kept beside the bytes.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson

# Bytes per entry besides the encoded receipt: the tuple, the bytes object's header, the deque
# slot and the key strings' share (measured by benchmarks/receipts_memory.py, rounded up).
ENTRY_OVERHEAD_BYTES = 256


class Entry(NamedTuple):
    seq: int
    request_id: str
    objective: str
    fairness_id: str
    endpoint: str
    outcome: str
    blob: bytes


def encode(receipt: dict[str, Any]) -> bytes:
    """JSON bytes; never fails on text a client chose."""
    try:
        # orjson's bytes keep the capacity of its growing buffer (up to twice the text):
        # an exact copy makes the ring's accounted bytes its real memory.
        return bytes(memoryview(orjson.dumps(receipt)))
    except orjson.JSONEncodeError:
        # A client-chosen label that is not UTF-8 (kept as surrogate escapes): JSON-escaped.
        return json.dumps(receipt, default=str).encode()


class ReceiptRing:
    """
    >>> ring = ReceiptRing(max_entries=1024, max_bytes=4 << 20)
    >>> ring.add({"seq": 1, "request_id": "r1", ...})
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("receipt ring bounds must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: deque[Entry] = deque()
        self.bytes = 0
        self.added = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, receipt: dict[str, Any]) -> None:
        if self.max_entries == 0:
            return
        blob = encode(receipt)
        size = len(blob) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return  # larger than the whole ring: never kept
        entries = self._entries
        entries.append(
            Entry(
                receipt["seq"],
                receipt["request_id"],
                receipt["objective"] or "",
                receipt["fairness_id"],
                receipt["endpoint"] or "",
                receipt["outcome"] or "",
                blob,
            )
        )
        self.bytes += size
        self.added += 1
        while len(entries) > self.max_entries or self.bytes > self.max_bytes:
            old = entries.popleft()
            self.bytes -= len(old.blob) + ENTRY_OVERHEAD_BYTES
            self.evicted += 1

    def newest_first(self) -> Iterator[Entry]:
        return reversed(self._entries)
