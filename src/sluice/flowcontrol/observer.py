"""Hooks through which the controller reports what it does, without knowing who listens.

The core stays free of Prometheus: `metrics.py` implements `FlowObserver`; tests and the
benchmark use `NullObserver`.
"""

from __future__ import annotations

from typing import Protocol

from sluice.flowcontrol.model import Finalized, FlowKey, Ticket


class BandView(Protocol):
    @property
    def priority(self) -> int: ...
    @property
    def queued_requests(self) -> int: ...
    @property
    def queued_bytes(self) -> int: ...
    @property
    def jain_index(self) -> float: ...


class FlowView(Protocol):
    @property
    def key(self) -> FlowKey: ...
    @property
    def counter(self) -> float: ...
    @property
    def served(self) -> float: ...


class FlowObserver(Protocol):
    def on_enqueued(self, ticket: Ticket, band: BandView) -> None:
        """`ticket` joined the queue of `band` (figures already include it)."""
        ...

    def on_finalized(self, event: Finalized, band: BandView | None) -> None:
        """An item left flow control (figures already exclude it). `band` is None for items
        that never joined a band (capacity rejections of a new band, legacy mode)."""
        ...

    def on_served(self, flow: FlowView, band: BandView) -> None:
        """`flow`'s service or virtual counter changed (a dispatch or a completion)."""
        ...


class NullObserver:
    def on_enqueued(self, ticket: Ticket, band: BandView) -> None:
        pass

    def on_finalized(self, event: Finalized, band: BandView | None) -> None:
        pass

    def on_served(self, flow: FlowView, band: BandView) -> None:
        pass
