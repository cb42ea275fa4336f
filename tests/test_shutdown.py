"""`sluice.shutdown.drain`: the order of a drain, with a director stand-in whose work ends when
the test says (the real processes are in tests/e2e/test_drain.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sluice.shutdown import drain


@dataclass
class FakeDirector:
    in_flight: int = 0
    waiting: int = 0
    draining: bool = False
    rejected_at: list[float] = field(default_factory=list)

    def drain(self) -> None:
        self.draining = True

    def reject_waiting(self) -> int:
        rejected, self.waiting = self.waiting, 0
        if rejected:
            self.rejected_at.append(asyncio.get_running_loop().time())
        return rejected


async def test_waiting_requests_get_half_the_timeout_and_in_flight_ones_all_of_it() -> None:
    director = FakeDirector(in_flight=2, waiting=3)
    refused: list[str] = []
    stopped: list[float] = []

    async def graceful_stop(grace: float) -> None:
        stopped.append(grace)

    async def finish_later() -> None:
        await asyncio.sleep(0.6)
        director.in_flight = 0

    loop = asyncio.get_running_loop()
    start = loop.time()
    finishing = asyncio.create_task(finish_later())
    report = await drain(
        director,
        timeout_s=1.0,
        refuse_new=[lambda: refused.append("proxy")],
        graceful_stops=[graceful_stop],
    )
    await finishing
    assert director.draining and refused == ["proxy"] and stopped == [1.0]
    assert report.rejected_waiting == 3
    assert 0.5 <= director.rejected_at[0] - start < 0.6  # at half the timeout
    assert report.left_in_flight == 0
    assert 0.6 <= report.seconds < 0.9  # ended when the last one did, not at the timeout


async def test_an_idle_picker_stops_at_once_and_a_stuck_request_is_cut_at_the_timeout() -> None:
    idle = await drain(FakeDirector(), timeout_s=5.0, refuse_new=[], graceful_stops=[])
    assert idle.seconds < 0.1
    stuck = await drain(FakeDirector(in_flight=1), timeout_s=0.3, refuse_new=[], graceful_stops=[])
    assert stuck.left_in_flight == 1
    assert 0.3 <= stuck.seconds < 0.5
