"""`--tracing` (upstream's, on by default) does what it says: with an OTLP endpoint in the
environment spans are exported, and `--tracing=false` turns that off."""

from __future__ import annotations

import pytest

from sluice.cli.serve_options import parse_serve_options
from sluice.dashboard.wiring import Observability


@pytest.mark.parametrize(("flags", "traced"), [([], True), (["--tracing=false"], False)])
def test_the_flag_decides_whether_an_configured_exporter_is_used(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], traced: bool
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    observability = Observability.from_options(parse_serve_options(["--pool-name=p", *flags]))
    assert (observability.tracing is not None) is traced
