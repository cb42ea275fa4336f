"""A `GrpcServer` (sluice.net) on loopback with recording handlers, for the transport's own
tests: what each call saw, and how it ended."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sluice.net.call import Call
from sluice.net.limits import H2Limits
from sluice.net.server import ENGINES, GrpcServer

ECHO = "/test.Echo/Echo"  # echoes each message; finishes OK when the client half-closes
HOLD = "/test.Hold/Hold"  # keeps every message (reported with `hold`); finishes on half-close


@dataclass
class Record:
    path: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    messages: int = 0
    ends: list[str] = field(default_factory=list)  # "finish" / "cancel": exactly one, ever


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Record] = []

    def routes(self) -> dict[str, object]:
        return {ECHO: self._echo, HOLD: self._hold}

    def _echo(self, call: Call) -> _Echo:
        record = Record(call.path, list(call.headers))
        self.calls.append(record)
        return _Echo(call, record)

    def _hold(self, call: Call) -> _Hold:
        record = Record(call.path)
        self.calls.append(record)
        return _Hold(call, record)


class _Echo:
    def __init__(self, call: Call, record: Record) -> None:
        self.call, self.record = call, record

    def on_message(self, message: bytes) -> None:
        self.record.messages += 1
        self.call.send(message)

    def on_half_close(self) -> None:
        self.record.ends.append("finish")
        self.call.finish()

    def on_cancel(self) -> None:
        self.record.ends.append("cancel")


class _Hold(_Echo):
    def __init__(self, call: Call, record: Record) -> None:
        super().__init__(call, record)
        self.kept: list[bytes] = []

    def on_message(self, message: bytes) -> None:
        self.record.messages += 1
        self.kept.append(message)
        self.call.hold(sum(map(len, self.kept)))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def limits() -> H2Limits:
    return H2Limits()


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    """Every transport test runs on both HTTP/2 engines: Sluice's frames and python-hyper's."""
    return str(request.param)


@pytest.fixture
async def server(recorder: Recorder, limits: H2Limits, engine: str) -> AsyncIterator[GrpcServer]:
    grpc_server = GrpcServer(recorder.routes(), limits, engine=engine)  # type: ignore[arg-type]
    await grpc_server.start("127.0.0.1", 0)
    yield grpc_server
    await grpc_server.stop(None)
