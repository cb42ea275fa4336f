"""Stopping a replica ends its sync loop even when the store client swallows the cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from replicas.test_app_store import app
from sluice.bench.harness.ports import free_port


class CancelBecomesTimeout:
    """A store whose sync turns a cancel into a TimeoutError, as redis-py's connect timeout does
    when the cancel lands the moment it fires (under load, seen in CI as a stop that hung)."""

    url = "redis://127.0.0.1:1/0"

    def __init__(self) -> None:
        self.syncing = asyncio.Event()

    async def sync(self, *args: Any) -> Any:
        self.syncing.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise TimeoutError("Timeout connecting to server") from None

    async def close(self) -> None:
        return None


async def test_stop_returns_though_the_cancel_came_back_as_a_failed_sync(tmp_path: Path) -> None:
    replica = app(tmp_path, SimpleNamespace(port=free_port()), "a")  # type: ignore[arg-type]
    await replica.start()
    assert replica.replicas is not None
    store = CancelBecomesTimeout()
    replica.replicas.store = store  # type: ignore[assignment]
    await asyncio.wait_for(store.syncing.wait(), 5)
    stopping = asyncio.ensure_future(replica.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() still waits for the sync loop"
    assert replica.replicas.failures >= 1, "the swallowed cancel was counted as a failed sync"
