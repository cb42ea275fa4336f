"""`sluice serve` freezes what start-up left alive, once every server listens, whichever servers
run (ext_proc alone, or with the proxy): the collections per-request garbage triggers then never
walk the modules and clients again."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest

import sluice.app
import sluice.util.heap
from sluice.cli.serve import run_serve
from sluice.cli.serve_options import parse_serve_options
from sluice.settings import ServeSettings


def test_the_start_up_heap_goes_to_the_permanent_generation() -> None:
    assert gc.get_freeze_count() == 0
    try:
        sluice.util.heap.freeze_start_up_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the test process keeps collecting its own garbage


def test_serve_freezes_once_started_before_telling_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    happened: list[str] = []

    class Started:
        def __init__(self, options: ServeSettings) -> None:
            pass

        async def run_forever(self, on_started: Callable[[], None] | None = None) -> None:
            happened.append("listening")
            assert on_started is not None
            on_started()

    monkeypatch.setattr(sluice.app, "App", Started)
    monkeypatch.setattr(sluice.util.heap, "freeze_start_up_heap", lambda: happened.append("frozen"))
    options = parse_serve_options(["--pool-name=quickstart"])
    assert run_serve(options, on_started=lambda: happened.append("banner")) == 0
    assert happened == ["listening", "frozen", "banner"]
