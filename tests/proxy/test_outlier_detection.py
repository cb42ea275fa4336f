"""Issue #15 item 8: a fast-failing engine must not attract traffic.

Reproduction: an engine answering 500 at once looks idle (nothing queued, nothing running);
while one of four did so for 20 s, 41 of 100 requests failed — more than its share of 25.
Passive outlier detection (as Envoy's) ejects it after 5 consecutive failures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.support import write_pool
from sluice.app import App
from sluice.bench.harness.ports import free_port
from sluice.cli.serve_options import parse_serve_options
from sluice.datalayer.outlier import OutlierDetector, OutlierSettings

from .fake_engine import FakeEngine


@dataclass(frozen=True)
class _Endpoint:
    name: str


@dataclass(frozen=True)
class _State:
    endpoint: _Endpoint


def states(*names: str) -> list[_State]:
    return [_State(_Endpoint(n)) for n in names]


def test_five_consecutive_failures_eject_for_a_growing_back_off() -> None:
    detector = OutlierDetector()
    pool = states("a", "b", "c", "d")
    for _ in range(4):
        assert not detector.failure("a", 0.0)
    detector.success("a")  # any good answer resets the count
    assert [detector.failure("a", 1.0) for _ in range(5)] == [False] * 4 + [True]
    assert [s.endpoint.name for s in detector.admissible(pool, 1.0)] == ["b", "c", "d"]
    assert [s.endpoint.name for s in detector.admissible(pool, 31.0)] == ["a", "b", "c", "d"]
    for _ in range(5):
        detector.failure("a", 40.0)
    assert detector.ejected("a", 40.0 + 59.0)  # second ejection: twice the base
    assert not detector.ejected("a", 40.0 + 61.0)


@given(
    st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=200),
    st.integers(1, 4),
)
def test_never_more_than_half_the_pool_nor_the_last_endpoint_is_ejected(
    events: list[tuple[int, bool]], size: int
) -> None:
    detector = OutlierDetector(OutlierSettings(consecutive_failures=2))
    pool = states(*"abcd"[:size])
    for step, (index, failed) in enumerate(events):
        name = "abcd"[index % size]
        if failed:
            detector.failure(name, float(step))
        else:
            detector.success(name)
        left = detector.admissible(pool, float(step))
        assert len(left) >= 1
        assert len(left) >= size - int(size * 0.5)


@pytest.fixture
async def four_engines_one_broken(tmp_path: Path) -> AsyncIterator[tuple[App, int, FakeEngine]]:
    engines = [FakeEngine(name=f"engine-{i}") for i in range(4)]
    for engine in engines:
        await engine.start()
    engines[0].fail_with_500 = True
    write_pool(tmp_path, [e.port for e in engines])
    proxy_port = free_port()
    app = App(
        parse_serve_options(
            [
                "--pool-name=pool",
                f"--resources={tmp_path / 'pool.yaml'}",
                f"--proxy-port={proxy_port}",
                f"--metrics-port={free_port()}",
                f"--grpc-health-port={free_port()}",
                "--grpc-host=127.0.0.1",
                "--disable-extproc",
            ]
        )
    )
    await app.start()
    await asyncio.sleep(0.3)  # scraped: all four look idle
    try:
        yield app, proxy_port, engines[0]
    finally:
        await app.stop()
        for engine in engines:
            await engine.stop()


async def test_an_engine_answering_500_at_once_gets_no_more_than_its_share(
    four_engines_one_broken: tuple[App, int, FakeEngine], caplog: pytest.LogCaptureFixture
) -> None:
    _, port, broken = four_engines_one_broken
    url = f"http://127.0.0.1:{port}/v1/completions"
    statuses: list[int] = []

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in range(25):
            body = {"model": "test-model", "prompt": "hi", "max_tokens": 2}
            async with session.post(url, json=body) as response:
                await response.read()
                statuses.append(response.status)

    with caplog.at_level(logging.WARNING, logger="sluice.director"):
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(client(session) for _ in range(4)))

    assert len(statuses) == 100
    failed = statuses.count(500)
    # Five in a row eject it, plus what was already placed there when the fifth came back.
    assert failed <= 5 + 4, statuses
    assert len(broken.received) == failed
    assert failed < 25  # less than its share (before: 41 of 100)
    assert "endpoint ejected after consecutive failures" in caplog.text
