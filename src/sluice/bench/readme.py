"""The README's performance table, generated from a benchmark run: only the text between
`<!-- perf-table:start -->` and `<!-- perf-table:end -->` is replaced."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from sluice.bench import report
from sluice.bench.report import fmt, fmt_spread, isolation_ratios, markdown_table, targets
from sluice.bench.suite import ScenarioResult

START = "<!-- perf-table:start -->"
END = "<!-- perf-table:end -->"


def update_perf_table(readme_path: str | Path, rows: Sequence[Sequence[str]]) -> bool:
    """Write `rows` (first row = header) as a Markdown table between the markers.

    Returns False (and changes nothing) when the markers are missing."""
    path = Path(readme_path)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return False
    header, *body = rows
    table = markdown_table(header, body)
    new = text[: start + len(START)] + "\n" + "\n".join(table) + "\n" + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return True


def perf_rows(results: Sequence[ScenarioResult], command: str) -> list[list[str]]:
    """Headline numbers: goodput per arm on shared-prefix, isolation ratios, fairness."""
    rows = [["measure", "result", "how"]]
    by_name = {r.scenario.name: r for r in results}
    sp = by_name.get("shared-prefix")
    if sp is not None:
        for arm in sp.arms:
            rows.append(
                [
                    f"shared-prefix goodput, {arm}",
                    f"{fmt_spread(sp.goodputs(arm))} QPS",
                    "highest QPS with p90 TTFT ≤ 2 s, virtual time",
                ]
            )
    for name in ("two-bands", "noisy-neighbour"):
        iso = by_name.get(name)
        if iso is None:
            continue
        for arm in ("upstream-default", report.SLUICE):
            if arm in iso.arms:
                ratios = isolation_ratios(iso, arm)
                rows.append(
                    [
                        f"{name}: protected p99 TTFT loaded/alone, {arm}",
                        f"{fmt(statistics.median(ratios))}x",
                        "150% offered load, virtual time",
                    ]
                )
    met = sum(t.met for t in targets(results))
    rows.append(
        [
            "benchmark targets met",
            f"{met}/{len(targets(results))}",
            f"`{command}`, see benchmarks/RESULTS.md",
        ]
    )
    return rows
