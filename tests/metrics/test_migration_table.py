"""docs/migration.md's metrics table is complete and true: every `llm_d_epp_*` family
llm-d-router v0.10.0 defines has a row, and a real Sluice's `/metrics` (proxy, director and
metrics server on loopback, one request served) exports exactly the ones the table says it does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice.requests.errors import DroppedReason, contended
from sluice.requests.model import ApiKind, InferenceRequest

from .test_metrics_endpoint import StartSluice, start_sluice

__all__ = ["start_sluice"]  # the fixture, used by name

ROOT = Path(__file__).parents[2]
UPSTREAM = [
    line
    for line in (Path(__file__).parent / "upstream" / "llm_d_epp_v0.10.0.txt")
    .read_text()
    .splitlines()
    if line and not line.startswith("#")
]


def metric_rows() -> list[tuple[str, str]]:
    """(first cell, Sluice's cell) of each row of the Metrics section's table."""
    text = (ROOT / "docs" / "migration.md").read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and "`" in cells[0]:
            rows.append((cells[0], cells[2]))
    return rows


def row_of(name: str) -> str:
    """Sluice's cell of the row naming `name` (or the family it belongs to, `prefix_*`)."""
    for first, sluice in metric_rows():
        named = re.findall(r"`([a-z0-9_*]+)", first)
        if name in named or any(n.endswith("_*") and name.startswith(n[:-2]) for n in named):
            return sluice
    raise AssertionError(f"{name} has no row in docs/migration.md's metrics table")


@pytest.mark.parametrize("name", UPSTREAM)
def test_every_upstream_metric_has_a_row(name: str) -> None:
    assert row_of(name)


async def test_sluice_exports_exactly_the_upstream_names_the_table_says(
    start_sluice: StartSluice,
) -> None:
    sluice = await start_sluice("--metric-names=both")
    assert await sluice.send(b"tenant") == b"HTTP/1.1 200 OK"
    # and one rejection, through the calls the front ends make, so errors have a series
    metrics = sluice.app.director.core.metrics
    assert metrics is not None
    rejected = InferenceRequest("r", ApiKind.COMPLETIONS, "test-model", "test-model", b"{}", 1)
    metrics.received(rejected)
    metrics.failed(rejected, contended("queue at capacity", DroppedReason.SATURATED))
    _, text = await sluice.scrape()
    samples = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", text, re.MULTILINE))
    samples |= set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))  # families yet without a child

    def exported(name: str) -> bool:
        suffixes = ("", "_total", "_bucket", "_sum", "_count")
        family = name.removesuffix("_total")
        return any(family + s in samples for s in suffixes) or any(
            s.startswith(name[:-1]) for s in samples if name.endswith("_")
        )

    claimed = {name: not row_of(name).startswith("not exported") for name in UPSTREAM}
    wrong = {name: says for name, says in claimed.items() if exported(name) != says}
    assert not wrong, f"docs/migration.md says exported (True) or not (False); /metrics: {wrong}"
