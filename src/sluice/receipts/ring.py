"""The bounded ring of finished receipts: at most `max_entries`, and at most `max_bytes` of
receipts by their `footprint` (an upper bound of the memory each one keeps alive) — the oldest
go first.

The ring keeps the receipts as the director left them (the raw inputs of the decision, shared
with nothing that changes), not rendered: a receipt is turned into JSON only when
`GET /debug/decisions` or the dashboard reads it, so a request pays for a deque append.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from typing import Any

import orjson

from sluice.receipts.model import Receipt


def encode(receipt: dict[str, Any]) -> bytes:
    """JSON bytes; never fails on text a client chose."""
    try:
        return orjson.dumps(receipt)
    except orjson.JSONEncodeError:
        # A client-chosen label that is not UTF-8 (kept as surrogate escapes): JSON-escaped.
        return json.dumps(receipt, default=str).encode()


class ReceiptRing:
    """
    >>> ring = ReceiptRing(max_entries=1024, max_bytes=4 << 20)
    >>> ring.add(receipt)  # a finished Receipt
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("receipt ring bounds must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # two deques, not one of (size, receipt) pairs: a pair would be one more object the
        # garbage collector tracks per receipt kept
        self._entries: deque[Receipt] = deque()
        self._sizes: deque[int] = deque()
        self.bytes = 0
        self.added = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, receipt: Receipt) -> None:
        if self.max_entries == 0:
            return
        size = receipt.footprint()
        if size > self.max_bytes:
            return  # larger than the whole ring: never kept
        entries, sizes = self._entries, self._sizes
        entries.append(receipt)
        sizes.append(size)
        self.bytes += size
        self.added += 1
        while len(entries) > self.max_entries or self.bytes > self.max_bytes:
            entries.popleft()
            self.bytes -= sizes.popleft()
            self.evicted += 1

    def newest_first(self) -> Iterator[Receipt]:
        return reversed(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._sizes.clear()
        self.bytes = 0
