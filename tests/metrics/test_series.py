"""The families behind client-labelled metrics: their fast text is what prometheus_client's own
encoder writes for the same samples, and the byte budget folds new children into `other`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice.util.labels import OVERFLOW
from sluice.util.series import CounterFamily, GaugeFamily, HistogramFamily, SeriesBudget


def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_the_fast_text_holds_the_same_samples_as_the_library_encoder() -> None:
    registry = CollectorRegistry()
    counter = CounterFamily("req_total", "Requests.", ("model_name",))
    gauge = GaugeFamily("running", "Running.", ("model_name",))
    histogram = HistogramFamily("latency", "Latency.", ("model_name",), buckets=(0.1, 1.0))
    for family in (counter, gauge, histogram):
        registry.register(family)
    tricky = 'a "quoted"\nname\\'
    counter.labels(tricky).inc(3)
    gauge.labels("m").set(2.5)
    for value in (0.05, 0.5, 5.0):
        histogram.labels(tricky).observe(value)
    fast = "".join(chunk for f in (counter, gauge, histogram) for chunk in f.text_chunks())
    assert samples(fast) == samples(generate_latest(registry).decode())
    # Bucket bounds are written as Go writes them (le="1", not "1.0"), as upstream exports them.
    assert ("latency_bucket", (("le", "1"), ("model_name", tricky)), 2.0) in samples(fast)
    assert registry.get_sample_value("req_total", {"model_name": tricky}) == 3


def test_children_past_the_budget_fold_into_the_other_child() -> None:
    budget = SeriesBudget(limit_bytes=1000)
    family = CounterFamily(
        "req_total",
        "Requests.",
        ("model_name", "code"),
        client_labels=("model_name",),
        budget=budget,
    )
    made = [family.labels(f"model-{i}", "200") for i in range(100)]
    for child in made:
        child.inc()
    assert budget.used_bytes <= budget.limit_bytes
    folded = family.labels(OVERFLOW, "200")
    assert 0 < len(family) < 100
    assert folded.value == sum(1 for c in made if c is folded)
    assert family.labels("model-0", "200") is made[0]  # an admitted child stays itself


def test_children_without_client_labels_cost_nothing() -> None:
    budget = SeriesBudget(limit_bytes=0)
    family = CounterFamily(
        "attempts_total", "Attempts.", ("status",), client_labels=("model_name",), budget=budget
    )
    assert family.labels("success").labels == ("success",)
    assert budget.used_bytes == 0


def test_a_family_renders_in_chunks_of_a_few_children() -> None:
    family = GaugeFamily("g", "Gauge.", ("id",))
    for i in range(200):
        family.labels(str(i)).set(i)
    chunks = list(family.text_chunks(children_per_chunk=64))
    assert len(chunks) == 1 + 4  # the header, then 64 + 64 + 64 + 8 children
    assert chunks[0] == "# HELP g Gauge.\n# TYPE g gauge\n"


def test_an_update_between_two_scrapes_shows_in_the_second() -> None:
    """Children nobody touched are not formatted again; touched ones always are."""
    histogram = HistogramFamily("latency", "Latency.", ("id",), buckets=(1.0,))
    idle, busy = histogram.labels("idle"), histogram.labels("busy")
    idle.observe(0.5)
    busy.observe(0.5)
    first = "".join(histogram.text_chunks())
    busy.observe(2.0)
    second = "".join(histogram.text_chunks())
    assert 'latency_count{id="busy"} 1' in first
    assert 'latency_count{id="busy"} 2' in second
    assert 'latency_bucket{id="busy",le="+Inf"} 2' in second
    assert 'latency_count{id="idle"} 1' in second
