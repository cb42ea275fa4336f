"""`sluice serve`: parse upstream-compatible flags, then run the application."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from sluice import logs
from sluice.cli.flags import FlagError
from sluice.cli.serve_options import parse_serve_options, serve_flagset
from sluice.settings import ServeSettings

HELP_INTRO = """Run the Endpoint Picker: ext_proc gRPC for gateways, gRPC health, Prometheus
metrics and, with --proxy-port, the OpenAI-compatible proxy. Resources come from the cluster,
or from --resources (a manifest file or directory, hot-reloaded).

Flags take upstream's forms: --flag=value, --flag value, booleans as --flag or --flag=false,
durations as 50ms, 2s or 1m30s.
"""


def serve_main(argv: list[str]) -> int:
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(HELP_INTRO)
        print(serve_flagset().usage())
        return 0
    try:
        options = parse_serve_options(argv)
    except FlagError as exc:
        print(f"sluice serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(options.log_output, options.verbosity)
    return run_serve(options)


def run_serve(
    options: ServeSettings,
    *,
    program: str = "sluice serve",
    on_started: Callable[[], None] | None = None,
) -> int:
    """Run the application until a signal; start-up mistakes exit 2 with a clear message. Once
    every server listens, the heap start-up left is frozen (`util.heap`), whichever servers run."""
    from sluice.app import App, AppError
    from sluice.util.heap import freeze_start_up_heap

    def started() -> None:
        # this process serves until a signal: what start-up left alive is never garbage
        freeze_start_up_heap()
        if on_started is not None:
            on_started()

    async def main() -> None:
        await App(options).run_forever(started)

    try:
        run_async(main())
    except AppError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def run_async(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when available (it is a dependency off Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)
