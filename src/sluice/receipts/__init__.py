"""Decision receipts: per request, why it waited, how its endpoint was chosen and how it ended.

Sans-I/O: the director's core calls `ReceiptRecorder` at each step with `now`; finished receipts
are encoded once into a `ReceiptRing` bounded by count and bytes, which `GET /debug/decisions`,
the dashboard and the traces read. May import `sluice.datalayer`, `sluice.requests`,
`sluice.room` and `sluice.scheduling` (types). See docs/observability.md.
"""

from sluice.receipts.model import Receipt
from sluice.receipts.query import DecisionFilter
from sluice.receipts.recorder import ReceiptRecorder
from sluice.receipts.ring import ReceiptRing

__all__ = ["DecisionFilter", "Receipt", "ReceiptRecorder", "ReceiptRing"]
