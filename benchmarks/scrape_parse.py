"""Parse cost of one vLLM `/metrics` page: Sluice's family-selective parser vs prometheus_client.

Run: .venv/bin/python benchmarks/scrape_parse.py
"""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from sluice.bench.harness.child import exit_on_sigterm
from sluice.bench.harness.vllm_page import vllm_metrics_page
from sluice.datalayer.extract import metrics_from_text
from sluice.datalayer.metric_names import VLLM


def per_call_us(fn: object, repeat: int) -> float:
    call = fn  # type: ignore[assignment]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            call()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


def main() -> None:
    page = vllm_metrics_page()
    print(f"page: {len(page)} bytes, {page.count(chr(10))} lines")
    sluice = per_call_us(lambda: metrics_from_text(page, VLLM, None, 0.0), 2000)
    upstream = per_call_us(lambda: list(text_string_to_metric_families(page)), 50)
    print(f"sluice parse+extract: {sluice:8.1f} us/page")
    print(f"prometheus_client parse: {upstream:8.1f} us/page  ({upstream / sluice:.0f}x slower)")


if __name__ == "__main__":
    exit_on_sigterm()
    main()
