"""The application shell: sources → state → pipeline → servers, on one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from sluice.cli.serve_options import ServeOptions
from sluice.logs import get_logger
from sluice.sources.state import PoolKey, PoolState

log = get_logger("app")


class AppError(Exception):
    """A configuration mistake found at start-up; the message names the flag or file."""


class App:
    def __init__(self, options: ServeOptions):
        self.options = options
        self.key = PoolKey(
            name=str(options["pool-name"]),
            namespace=options.pool_namespace,
            group=str(options["pool-group"]),
        )
        resources = options["resources"]
        if resources and not Path(resources).exists():
            raise AppError(f"--resources {resources}: no such file or directory")
        self.state: PoolState | None = None
        self._stopping = asyncio.Event()

    def on_state(self, state: PoolState) -> None:
        previous = self.state
        self.state = state
        if previous is None or previous.endpoints != state.endpoints or previous.pool is None:
            log.info(
                "pool state",
                pool=f"{state.key.namespace}/{state.key.name}",
                loaded=state.loaded,
                endpoints=",".join(e.hostport for e in state.endpoints) or "-",
                objectives=",".join(k.split("/", 1)[1] for k in state.objectives) or "-",
            )

    async def run_forever(self) -> None:
        from sluice.sources.files import ManifestDirectorySource

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stopping.set)
        tasks: list[asyncio.Task[None]] = []
        if self.options["resources"]:
            source = ManifestDirectorySource(self.options["resources"], self.key, self.on_state)
            source.refresh()
            tasks.append(asyncio.create_task(source.run()))
        log.info("sluice serving", pool=f"{self.key.namespace}/{self.key.name}")
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
