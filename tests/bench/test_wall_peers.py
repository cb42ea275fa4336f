"""The peer routers of the wall-clock suite, configured as their docs say: smg's priority
scheduler (its own CLI, a class YAML, each worker's real slots, `x-smg-priority` from the
clients) in front of real `sluice sim` engines."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from sluice.bench.scenarios import SCENARIOS
from sluice.bench.wall.processes import (
    SMG_PRIORITY,
    client_headers,
    installed_peers,
    smg_class,
    smg_scheduler_yaml,
    start_engines,
    start_router,
    stop,
)

needs_smg = pytest.mark.skipif(not installed_peers()["smg"], reason="smg is in the peers extra")


def test_objectives_map_to_smg_classes_and_only_smg_priority_sends_them() -> None:
    objectives = {"interactive": 10, "batch": 0, "sheddable": -1}
    assert client_headers(SMG_PRIORITY, objectives) == {
        "interactive": {"x-smg-priority": "interactive"},
        "batch": {"x-smg-priority": "default"},
        "sheddable": {"x-smg-priority": "bulk"},
    }
    assert client_headers("smg:cache_aware", objectives) == {}
    assert smg_class(1) == "interactive"


def test_the_class_yaml_reserves_the_interactive_share_and_lets_only_it_preempt() -> None:
    text = smg_scheduler_yaml(0.3)
    assert "  interactive:\n    reserved_floor: 0\n    reserved_per_slot: 0.3\n" in text
    assert text.count("reserved_per_slot: 0\n") == 3
    assert text.count("can_preempt: true") == 1


async def _post(url: str, priority: str, tokens: int) -> float:
    """The request's completion time (monotonic)."""
    import aiohttp

    body = {"model": "sim-model", "prompt": "hi", "max_tokens": tokens, "ignore_eos": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/v1/completions", json=body, headers={"x-smg-priority": priority}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        await resp.read()
    return time.monotonic()


async def _batch_then_interactive(url: str, batch: int) -> tuple[list[float], float]:
    waves = [asyncio.create_task(_post(url, "default", 60)) for _ in range(batch)]
    await asyncio.sleep(0.2)
    interactive = await _post(url, "interactive", 60)
    return list(await asyncio.gather(*waves)), interactive


@needs_smg
def test_smg_priority_takes_the_engines_slots_and_admits_interactive_ahead_of_queued_batch() -> (
    None
):
    engines = start_engines(SCENARIOS["two-bands"], priority=False)
    engines.slots = 1  # one request per engine at a time: four in the pool, so smg queues
    workdir = Path(tempfile.mkdtemp(prefix="sluice-smg-"))
    router = None
    try:
        router, (url,) = start_router(SMG_PRIORITY, engines, {"interactive": 10}, workdir)
        with urllib.request.urlopen(url + "/workers", timeout=5) as response:
            workers = json.loads(response.read())["workers"]
        assert len(workers) == len(engines.urls)
        assert {w["labels"]["max_running_requests"] for w in workers} == {"1"}
        # interactive keeps ceil(0.3 x 4) = 2 of the 4 slots: 8 batch requests run 2 at a
        # time, and the interactive one sent after them is admitted at once, ahead of the 6
        # still queued (first come, first served would finish it after all 8)
        batch, interactive = asyncio.run(_batch_then_interactive(url, 8))
        assert sum(done < interactive for done in batch) <= 2
    finally:
        if router is not None:
            stop(router)
        engines.stop()
        shutil.rmtree(workdir, ignore_errors=True)
