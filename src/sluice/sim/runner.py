"""The imperative shell around one engine: a loop task that runs steps on the real clock (sleeping
for each step's duration) and hands the produced tokens to the requests waiting for them."""

from __future__ import annotations

import asyncio
import logging
import time

from sluice.sim.engine import Engine
from sluice.sim.kv_publisher import ZmqEventPublisher
from sluice.sim.metrics import render
from sluice.sim.request import SimRequest
from sluice.sim.sequence import Sequence


class TokenStream:
    """A request's view of its progress; ``wait()`` returns once there is something new."""

    __slots__ = ("_waiter", "delivered", "seq")

    def __init__(self, seq: Sequence) -> None:
        self.seq = seq
        self.delivered = 0  # tokens the consumer has already taken
        self._waiter: asyncio.Future[None] | None = None

    @property
    def pending(self) -> int:
        return self.seq.num_output - self.delivered

    @property
    def finished(self) -> bool:
        return self.seq.finished

    async def wait(self) -> None:
        if self.seq.num_output > self.delivered or self.seq.finished:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _notify(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class EngineRunner:
    def __init__(self, engine: Engine, publisher: ZmqEventPublisher | None = None) -> None:
        self.engine = engine
        self.publisher = publisher
        self._streams: dict[str, TokenStream] = {}
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # Engine time is the loop's monotonic clock; /metrics timestamps need Unix time.
        self._clock_offset = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._clock_offset = time.time() - loop.time()
        # vLLM's LoRA info gauge holds a timestamp; start it at "now", not at the clock's epoch.
        self.engine.lora_info_time = max(self.engine.lora_info_time, loop.time())
        self._task = loop.create_task(self._run(), name=f"sim-engine-{self.engine.model_name}")
        self._task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.publisher is not None:
            await self.publisher.close()

    def submit(self, request: SimRequest) -> TokenStream:
        """Hand a request to the engine now (raises ValueError if the engine refuses it)."""
        seq = self.engine.add_request(request, asyncio.get_running_loop().time())
        stream = TokenStream(seq)
        self._streams[request.request_id] = stream
        self._kick()
        return stream

    def abort(self, request_id: str) -> None:
        if self._streams.pop(request_id, None) is not None:
            self.engine.abort(request_id, asyncio.get_running_loop().time())
            self._publish_kv_events()

    def reset_prefix_cache(self) -> bool:
        done = self.engine.reset_prefix_cache()
        self._publish_kv_events()
        return done

    def metrics_text(self) -> str:
        return render(self.engine.metrics(), clock_offset=self._clock_offset)

    def _kick(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        engine = self.engine
        while True:
            now = loop.time()
            duration = engine.start_step(now)
            self._publish_kv_events()
            if duration is None:
                await self._idle(loop, engine.next_arrival_time())
                continue
            delay = now + duration - loop.time()
            # sleep(0) still yields, so handlers run between zero-cost steps.
            await asyncio.sleep(delay if delay > 0 else 0)
            for seq in engine.finish_step(loop.time()):
                stream = self._streams.get(seq.request_id)
                if stream is None:
                    continue
                if seq.finished:
                    del self._streams[seq.request_id]
                stream._notify()
            self._publish_kv_events()

    def _publish_kv_events(self) -> None:
        """One batch per drain of the engine's events, as vLLM publishes once per step."""
        if self.publisher is not None:
            events = self.engine.take_kv_events()
            if events:
                self.publisher.publish(events)

    async def _idle(self, loop: asyncio.AbstractEventLoop, arrival: float | None) -> None:
        self._wakeup = loop.create_future()
        timer = loop.call_at(arrival, self._kick) if arrival is not None else None
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()


def _report_crash(task: asyncio.Task[None]) -> None:
    """A dead engine loop would silently hang every request: say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger("sluice.sim").error("engine loop crashed", exc_info=task.exception())
