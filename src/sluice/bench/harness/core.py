"""A `DispatchCore` built from a Sluice config, as tests and benchmarks drive it in virtual time."""

from __future__ import annotations

import random

from sluice.config import SluiceConfig
from sluice.datalayer.registry import EndpointRegistry
from sluice.director.core import DispatchCore, OnRelease
from sluice.flowcontrol.config import FlowControlConfig
from sluice.flowcontrol.controller import FlowController
from sluice.receipts import ReceiptRecorder
from sluice.scheduling.scheduler import Scheduler


def core_from_config(
    config: SluiceConfig,
    on_release: OnRelease,
    *,
    seed: int = 1,
    flow: FlowControlConfig | None = None,
    receipts: ReceiptRecorder | None = None,
) -> DispatchCore:
    """The config's scheduler, flow control (or `flow` instead) and room over an empty registry;
    the scheduler and the core each draw from their own `random.Random(seed)`, so a run repeats."""
    return DispatchCore(
        scheduler=Scheduler.from_config(config.picker, rng=random.Random(seed)),
        flow=FlowController(config.flow if flow is None else flow),
        registry=EndpointRegistry(),
        room=config.room,
        rng=random.Random(seed),
        on_release=on_release,
        receipts=receipts,
    )
