"""Upstream's usage-limit policies at work in the real director, configured by llm-d-router
v0.10's own examples, unchanged (tests/config/upstream): a band's requests wait in Sluice while
the pool's saturation is at or above the band's ceiling, and go once it is below."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from sluice.datalayer.endpoint import EngineMetrics
from sluice.director import Director
from sluice.director.contract import Outcome
from test_director import CONFIG, Clock, chat, director_with

UPSTREAM = Path(__file__).parents[1] / "config" / "upstream"
STATIC = UPSTREAM / "flowcontrol__usagelimits__README.md__16.yaml"
HOLDBACK = UPSTREAM / "flowcontrol__usagelimits__priorityholdback__README.md__57.yaml"
# The bands of the test pool's objectives (test_director.pool_state), highest first.
BANDS = (("interactive", 10), (None, 0), ("batch", -1))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def parameters(path: Path) -> dict[str, float]:
    return dict(yaml.safe_load(path.read_text())["plugins"][0]["parameters"])


def scrape(director: Director, clock: Clock, *, waiting: int = 0, kv: float = 0.0) -> None:
    """Every endpoint reports the same load, fresh now."""
    for state in director.registry.snapshot():
        mark = director.registry.begin_scrape(state.name)
        assert mark is not None
        metrics = EngineMetrics(waiting=waiting, kv_cache_usage=kv, updated_at=clock.now)
        director.registry.record_scrape(mark, metrics)


def at_saturation(director: Director, clock: Clock, saturation: float) -> None:
    """Every endpoint at `saturation` of its KV threshold: the pool's saturation (upstream's
    utilization detector), while each endpoint stays under its own thresholds."""
    settings = director.room.settings
    assert saturation < 1.0
    scrape(director, clock, kv=saturation * settings.kv_cache_util)
    director.pump()
    assert director.room.saturation == pytest.approx(saturation)


async def test_with_threshold_a_band_waits_while_saturation_is_at_it_and_goes_below(
    clock: Clock,
) -> None:
    threshold = parameters(STATIC)["threshold"]
    director = director_with(STATIC.read_text(), clock)
    settings = director.room.settings
    waiting = round(threshold * settings.queue_depth)
    assert waiting / settings.queue_depth == threshold and waiting <= settings.queue_depth
    scrape(director, clock, waiting=waiting)  # each endpoint has room; the pool is at the ceiling
    task = asyncio.create_task(director.admit(chat(director)))
    await asyncio.sleep(0.02)
    assert director.room.saturation == threshold
    assert not task.done() and director.flow.queued_requests == 1
    scrape(director, clock, waiting=waiting - 1)  # below the ceiling
    director.pump()
    admitted = await asyncio.wait_for(task, 1)
    admitted.finish(Outcome.COMPLETED)

    # Without the policy the same pool lets the request go at once: the hold was the ceiling.
    plain = director_with(CONFIG, clock)
    scrape(plain, clock, waiting=waiting)
    (await asyncio.wait_for(plain.admit(chat(plain)), 1)).finish(Outcome.COMPLETED)


async def test_with_the_holdback_curve_lower_bands_are_held_at_lower_saturation(
    clock: Clock,
) -> None:
    params = parameters(HOLDBACK)
    assert (params["shape"], params["domain"]) == ("linear", "rank")
    low, high = params["minCeiling"], params["maxCeiling"]
    director = director_with(HOLDBACK.read_text(), clock)
    scrape(director, clock, waiting=50)  # over every ceiling
    released: list[int] = []

    async def go(objective: str | None) -> None:
        request = chat(director, objective)
        admitted = await director.admit(request)
        released.append(request.priority)
        admitted.finish(Outcome.COMPLETED)

    tasks = [asyncio.create_task(go(objective)) for objective, _ in reversed(BANDS)]
    await asyncio.sleep(0.02)
    assert released == [] and director.flow.queued_requests == len(BANDS)
    # Three active bands, ranked: maxCeiling, the midpoint, minCeiling.
    ceilings = [director.room.ceiling(p, clock.now) for _, p in BANDS]
    assert ceilings == pytest.approx([high, (high + low) / 2, low])
    # Saturation between two ceilings releases exactly the bands whose ceiling is above it.
    for step, (upper, lower) in enumerate(zip(ceilings, [*ceilings[1:], 0.0])):
        assert upper is not None and lower is not None
        at_saturation(director, clock, (upper + lower) / 2)
        await asyncio.sleep(0.02)
        assert released == [p for _, p in BANDS[: step + 1]], (step, released)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
