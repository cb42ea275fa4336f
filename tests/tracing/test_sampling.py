"""The tracer's own sampling decision (`export._decision`) is the SDK sampler's, for every
sampler `OTEL_TRACES_SAMPLER` names, with and without an incoming parent."""

from __future__ import annotations

import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanContext, TraceFlags

from sluice.tracing.export import _decision

SAMPLERS = [
    ("always_on", None),
    ("always_off", None),
    ("traceidratio", "0.3"),
    ("parentbased_always_on", None),
    ("parentbased_always_off", None),
    ("parentbased_traceidratio", "0.3"),
]


def sampler_from(monkeypatch: pytest.MonkeyPatch, name: str, arg: str | None) -> Sampler:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    return TracerProvider().sampler


@pytest.mark.parametrize(("name", "arg"), SAMPLERS)
def test_the_fast_decision_is_the_sdks(
    monkeypatch: pytest.MonkeyPatch, name: str, arg: str | None
) -> None:
    sampler = sampler_from(monkeypatch, name, arg)
    decide = _decision(sampler)
    assert decide is not None, f"{name}: no fast decision"
    rng = random.Random(7)
    outcomes = set()
    for i in range(2000):
        trace_id = rng.getrandbits(128)
        parent = None
        if i % 3:
            flags = TraceFlags(TraceFlags.SAMPLED if i % 2 else 0)
            parent = SpanContext(trace_id, rng.getrandbits(64) | 1, i % 5 != 0, flags)
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
        sdk = sampler.should_sample(context, trace_id, "gateway.request").decision.is_sampled()
        assert decide(trace_id, parent) is sdk, (name, i)
        outcomes.add(sdk)
    if "traceidratio" in name or name.startswith("parentbased"):
        assert outcomes == {True, False}  # both decisions were exercised
    else:
        assert outcomes == {name == "always_on"}


def test_another_sampler_is_left_to_the_sdk() -> None:
    class Custom(Sampler):
        def should_sample(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def get_description(self) -> str:
            return "custom"

    assert _decision(Custom()) is None
