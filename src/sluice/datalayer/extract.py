"""Turn parsed `/metrics` samples into `EngineMetrics` (upstream's extraction rules, facts §6.2)."""

from __future__ import annotations

from sluice.datalayer.endpoint import EngineMetrics
from sluice.datalayer.metric_names import MetricNames, MetricSpec
from sluice.datalayer.promtext import Sample, parse_families


def select_sample(samples: dict[str, list[Sample]], spec: MetricSpec) -> Sample | None:
    """The series matching `spec`; among several, the one with the latest timestamp (or the last
    one on the page when there are no timestamps)."""
    best: Sample | None = None
    for sample in samples.get(spec.name, ()):
        if any(sample.labels.get(k) != v for k, v in spec.labels):
            continue
        if (
            best is None
            or sample.timestamp_ms is None
            or (best.timestamp_ms is not None and sample.timestamp_ms >= best.timestamp_ms)
        ):
            best = sample
    return best


def _split_adapters(value: str) -> frozenset[str]:
    return frozenset(a.strip() for a in value.split(",") if a.strip())


def _lora_sample(samples: dict[str, list[Sample]], spec: MetricSpec) -> Sample | None:
    # Upstream: among series with running or waiting adapters, the largest gauge (a timestamp).
    # Sluice also falls back to the largest series without adapters, to learn `max_lora`.
    with_adapters: Sample | None = None
    any_series: Sample | None = None
    for s in samples.get(spec.name, ()):
        if any(s.labels.get(k) != v for k, v in spec.labels):
            continue
        if any_series is None or s.value >= any_series.value:
            any_series = s
        if (s.labels.get("running_lora_adapters") or s.labels.get("waiting_lora_adapters")) and (
            with_adapters is None or s.value >= with_adapters.value
        ):
            with_adapters = s
    return with_adapters or any_series


def _int_label(sample: Sample, key: str) -> int:
    try:
        return int(float(sample.labels.get(key, "0")))
    except ValueError:
        return 0


def metrics_from_samples(
    samples: dict[str, list[Sample]],
    names: MetricNames,
    previous: EngineMetrics | None,
    now: float,
) -> EngineMetrics:
    """New metrics stamped `now`, listing in `missing_metrics` the load metrics the page lacked.

    Waiting, running, LoRA and cache info absent from the page keep their previous values
    (upstream stores partially-updated snapshots; whether such a page is usable at all is the
    recorder's call). KV usage absent from the page is unknown (`kv_cache_known` False, value
    0.0) rather than kept: an old value would go on blocking or admitting on a number the
    engine no longer reports."""
    # A fresh copy, then assignments: `dataclasses.replace(base, **updates)` costs more.
    m = previous.restamped(now) if previous is not None else EngineMetrics(updated_at=now)
    missing: list[str] = []
    if (s := select_sample(samples, names.waiting)) is not None:
        m.waiting = int(s.value)
    else:
        missing.append(str(names.waiting))
    if (s := select_sample(samples, names.running)) is not None:
        m.running = int(s.value)
    else:
        missing.append(str(names.running))
    for spec in (names.kv_cache_usage, *names.kv_cache_usage_fallbacks):
        if (s := select_sample(samples, spec)) is not None:
            m.kv_cache_usage = float(s.value)
            m.kv_cache_known = True
            break
    else:
        m.kv_cache_usage, m.kv_cache_known = 0.0, False
        missing.append(str(names.kv_cache_usage))
    m.missing_metrics = tuple(missing)
    if names.lora_info is not None and (s := _lora_sample(samples, names.lora_info)) is not None:
        m.active_adapters = _split_adapters(s.labels.get("running_lora_adapters", ""))
        m.waiting_adapters = _split_adapters(s.labels.get("waiting_lora_adapters", ""))
        m.max_adapters = _int_label(s, "max_lora")
    if names.cache_info is not None and (s := select_sample(samples, names.cache_info)):
        m.cache_block_size = _int_label(s, "block_size")
        m.cache_num_blocks = _int_label(s, "num_gpu_blocks")
    for field, spec in names.prefill_counters:
        total = _counter_total(samples, spec)
        if total is not None:
            setattr(m, field, total)
    return m


def _counter_total(samples: dict[str, list[Sample]], spec: MetricSpec) -> float | None:
    """The sum over every series matching `spec` (a counter split by engine or rank)."""
    total: float | None = None
    for sample in samples.get(spec.name, ()):
        if all(sample.labels.get(k) == v for k, v in spec.labels):
            total = sample.value + (total or 0.0)
    return total


def lacks_queue_metrics(metrics: EngineMetrics, names: MetricNames) -> bool:
    """The page had no waiting or no running series: it tells nothing about the engine's load."""
    missing = metrics.missing_metrics
    return bool(missing) and any(str(spec) in missing for spec in names.queue_specs)


def metrics_from_text(
    text: str, names: MetricNames, previous: EngineMetrics | None, now: float
) -> EngineMetrics:
    """Parse one `/metrics` page and extract the engine metrics from it."""
    primary, value_only = _families(names)
    samples = parse_families(text, primary, value_only)
    if names.kv_cache_usage.name not in samples and names.kv_cache_usage_fallbacks:
        # Only pay for a scan for legacy names when the current one is absent.
        samples.update(parse_families(text, [s.name for s in names.kv_cache_usage_fallbacks]))
    return metrics_from_samples(samples, names, previous, now)


# names -> its family lists: computing them is ~10% of a parse, and a scraper reuses one
# MetricNames for its lifetime. Keyed by id with the object kept alive, so ids are not reused.
_FAMILIES: dict[int, tuple[MetricNames, tuple[str, ...], frozenset[str]]] = {}


def _families(names: MetricNames) -> tuple[tuple[str, ...], frozenset[str]]:
    entry = _FAMILIES.get(id(names))
    if entry is None or entry[0] is not names:
        if len(_FAMILIES) >= 64:
            _FAMILIES.clear()
        entry = _FAMILIES[id(names)] = (
            names,
            names.primary_families,
            names.value_only_families,
        )
    return entry[1], entry[2]
