"""Flow control: priority bands ▸ flows ▸ queues, fairness and ordering policies, capacity,
TTLs and the sans-I/O controller. May import `sluice.api`, `sluice.requests` (types only) and
`sluice.util`."""

from sluice.flowcontrol.classify import engine_priority, flow_of
from sluice.flowcontrol.config import BandConfig, FlowControlConfig
from sluice.flowcontrol.controller import FlowController, error_for
from sluice.flowcontrol.fairness import TokenCost
from sluice.flowcontrol.model import (
    Accepted,
    CapacityView,
    Finalized,
    FlowKey,
    QueueOutcome,
    Ticket,
)
from sluice.flowcontrol.observer import FlowObserver, NullObserver

__all__ = [
    "Accepted",
    "BandConfig",
    "CapacityView",
    "Finalized",
    "FlowControlConfig",
    "FlowController",
    "FlowKey",
    "FlowObserver",
    "NullObserver",
    "QueueOutcome",
    "Ticket",
    "TokenCost",
    "engine_priority",
    "error_for",
    "flow_of",
]
