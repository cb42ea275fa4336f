"""`GET /debug/decisions` filters: exact matches on the fields a ring entry keeps."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sluice.receipts.model import Receipt
from sluice.receipts.ring import ReceiptRing, encode

FILTER_FIELDS = ("request_id", "objective", "fairness_id", "endpoint", "outcome")
DEFAULT_LIMIT = 100


class FilterError(ValueError):
    """A query parameter Sluice does not know, or a bad limit; the message names it."""


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    request_id: str | None = None
    objective: str | None = None
    fairness_id: str | None = None
    endpoint: str | None = None  # ip:port of the chosen endpoint
    outcome: str | None = None
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> DecisionFilter:
        unknown = sorted(set(query) - {*FILTER_FIELDS, "limit"})
        if unknown:
            raise FilterError(
                f"unknown filter {', '.join(unknown)}; use {', '.join(FILTER_FIELDS)} or limit"
            )
        limit = DEFAULT_LIMIT
        if "limit" in query:
            try:
                limit = int(query["limit"])
            except ValueError:
                limit = -1
            if limit < 1:
                raise FilterError(f"limit={query['limit']}: give a positive integer")
        return cls(**{k: query[k] for k in FILTER_FIELDS if k in query}, limit=limit)

    def matches(self, entry: Receipt) -> bool:
        return (
            (self.request_id is None or entry.request_id == self.request_id)
            and (self.objective is None or entry.objective == self.objective)
            and (self.fairness_id is None or entry.fairness_id == self.fairness_id)
            and (self.endpoint is None or entry.endpoint == self.endpoint)
            and (self.outcome is None or entry.outcome == self.outcome)
        )

    def receipts(self, ring: ReceiptRing) -> Iterator[Receipt]:
        """The receipts that match, newest first, at most `limit`."""
        left = self.limit
        for entry in ring.newest_first():
            if left <= 0:
                return
            if self.matches(entry):
                left -= 1
                yield entry

    def select(self, ring: ReceiptRing) -> Iterator[bytes]:
        """The matching receipts as JSON (rendered now: the ring keeps them unrendered)."""
        return (encode(r.as_dict()) for r in self.receipts(ring))

    def decoded(self, ring: ReceiptRing) -> list[dict[str, Any]]:
        return [orjson.loads(b) for b in self.select(ring)]
