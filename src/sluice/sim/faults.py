"""Fault injection: what a misbehaving engine does, switchable at run time (POST /admin/faults)
or at start-up (--fault), so the EPP's reliability paths can be tested."""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Mapping


class FaultMode(enum.Enum):
    NONE = "none"
    ERROR500 = "error500"  # inference requests answer 500 with an OpenAI error body
    HANG = "hang"  # inference requests never answer (until the fault is cleared: then 503)
    DROP_MIDSTREAM = "drop_midstream"  # the connection is cut after the first chunk(s)
    NO_METRICS = "no_metrics"  # /metrics answers 503; inference is unaffected


class Faults:
    """The current fault of one engine; ``rate`` is the share of requests it hits (seeded)."""

    def __init__(
        self, mode: FaultMode = FaultMode.NONE, rate: float = 1.0, *, seed: int = 0
    ) -> None:
        self._random = random.Random(seed)
        self._cleared = asyncio.Event()
        self.mode, self.rate = FaultMode.NONE, 1.0
        self.set(mode, rate)

    def set(self, mode: FaultMode, rate: float = 1.0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        self.mode, self.rate = mode, rate
        # Wake the hung requests: the fault they were hanging on is over.
        self._cleared.set()
        self._cleared = asyncio.Event()

    def update(self, body: object) -> None:
        """Apply an admin request body: ``{"mode": "hang", "rate": 0.5}``."""
        if not isinstance(body, Mapping) or "mode" not in body:
            raise ValueError(
                'expected {"mode": "none|error500|hang|drop_midstream|no_metrics", "rate"?: float}'
            )
        rate = body.get("rate", 1.0)
        if not isinstance(rate, int | float) or isinstance(rate, bool):
            raise ValueError("rate must be a number")
        self.set(FaultMode(body["mode"]), float(rate))

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode.value, "rate": self.rate}

    def hits(self, mode: FaultMode) -> bool:
        """Whether this request is struck by ``mode``."""
        return self.mode is mode and (self.rate >= 1.0 or self._random.random() < self.rate)

    async def wait_cleared(self) -> None:
        await self._cleared.wait()
