"""Draining on SIGTERM, so a rolling update of the picker drops no request.

The order, within `--drain-timeout` (upstream's flag, 30 s):

1. Readiness turns NOT_SERVING at once (gRPC health, the proxy's `/readyz`): the gateway and
   the kubelet stop sending here.
2. New work is refused cleanly. ext_proc does what grpc-go's GracefulStop does for upstream:
   the listener closes and each connection gets GOAWAY(NO_ERROR), so streams the gateway opens
   later go to another replica (a stream that crossed the GOAWAY is REFUSED_STREAM: unprocessed,
   safe to retry). The proxy keeps listening and answers 503 with `Retry-After` and
   `Connection: close`; the director refuses admission the same way.
3. Requests waiting in flow control keep their place for half the timeout — room still opens as
   engines finish — and are then answered 503 with `Retry-After` (nothing was sent for them).
4. Requests in flight finish; Sluice stops once none is left, or when the timeout ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from sluice.logs import get_logger

log = get_logger("shutdown")


class Drainable(Protocol):
    @property
    def in_flight(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    def drain(self) -> None: ...

    def reject_waiting(self) -> int: ...


@dataclass(frozen=True, slots=True)
class DrainReport:
    seconds: float
    rejected_waiting: int
    left_in_flight: int  # cut by the timeout


async def drain(
    director: Drainable,
    *,
    timeout_s: float,
    refuse_new: list[Callable[[], None]],
    graceful_stops: list[Callable[[float], Coroutine[Any, Any, None]]],
    poll_s: float = 0.02,
) -> DrainReport:
    """Steps 2-4 above (step 1 is the caller's flag, read by the health checks)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    director.drain()
    for refuse in refuse_new:
        refuse()
    stops: list[asyncio.Task[None]] = [
        asyncio.create_task(stop(timeout_s)) for stop in graceful_stops
    ]
    log.info(
        "draining", in_flight=director.in_flight, waiting=director.waiting, timeout_s=timeout_s
    )
    rejected = 0
    while director.in_flight or director.waiting:
        elapsed = loop.time() - start
        if elapsed >= timeout_s:
            break
        if director.waiting and elapsed >= timeout_s / 2:
            rejected += director.reject_waiting()
        await asyncio.sleep(poll_s)
    rejected += director.reject_waiting()  # none should be left; never leave one hanging
    await asyncio.gather(*stops, return_exceptions=True)
    report = DrainReport(loop.time() - start, rejected, director.in_flight)
    log.info(
        "drained",
        seconds=round(report.seconds, 3),
        rejected_waiting=report.rejected_waiting,
        cut_in_flight=report.left_in_flight,
    )
    return report
