"""The collector and a long-running server: freeze what start-up left alive."""

from __future__ import annotations

import gc


def freeze_start_up_heap() -> None:
    """Move everything alive after start-up into the collector's permanent generation.

    Why: every request allocates container objects, so young-generation collections run all the
    time and, every so often, a full collection walks the whole heap — modules, gRPC, Kubernetes,
    Prometheus and OpenTelemetry clients, configuration — although none of it ever becomes
    garbage. Frozen objects are skipped by the collector (they are still freed normally when
    their reference count drops to zero; only cyclic garbage among them is never collected).
    Process-wide: the owner of the process calls it (`sluice serve` once every server listens),
    not a library. docs/proxy.md has the measured effect.
    """
    gc.collect()  # start-up garbage goes first, rather than being frozen forever
    gc.freeze()
