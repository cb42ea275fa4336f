"""A flow: one tenant's queue within one priority band, with its fairness bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass

from sluice.flowcontrol.model import FlowKey
from sluice.flowcontrol.ordering import OrderingQueue


@dataclass(slots=True, eq=False)
class Flow:
    key: FlowKey
    queue: OrderingQueue
    weight: float = 1.0
    # Virtual token counter (VTC): weighted cost charged at dispatch, corrected at completion.
    counter: float = 0.0
    # Token cost actually served (unweighted), corrected at completion.
    served: float = 0.0
    queued_requests: int = 0
    queued_bytes: int = 0
    # Bookkeeping of the band's ready set (see fairness.py).
    ready: bool = False
    ready_version: int = 0
    ready_key: tuple[float, ...] = ()
    turn: int = 0

    @property
    def backlogged(self) -> bool:
        return self.queue.live > 0
