"""Builders shared by the scheduling tests."""

from __future__ import annotations

import random

from sluice.config import load_config
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.datalayer.registry import EndpointRegistry, EndpointState
from sluice.requests.model import ApiKind, ChatMessage, InferenceRequest
from sluice.scheduling.scheduler import Scheduler

NOW = 100.0
_ids = iter(range(1_000_000))


def request(
    prompt: str = "",
    *,
    model: str = "base",
    messages: tuple[ChatMessage, ...] = (),
    headers: dict[str, str] | None = None,
    cache_salt: str | None = None,
    subset_hint: frozenset[str] | None = None,
) -> InferenceRequest:
    return InferenceRequest(
        request_id=f"req-{next(_ids)}",
        api=ApiKind.CHAT if messages else ApiKind.COMPLETIONS,
        model=model,
        target_model=model,
        body=b"{}",
        prompt_tokens=max(1, len(prompt) // 4),
        prompt=prompt,
        messages=messages,
        cache_salt=cache_salt,
        subset_hint=subset_hint,
        headers=headers or {},
    )


def pool(*metrics: EngineMetrics, now: float = NOW) -> EndpointRegistry:
    """A registry with one endpoint per metrics object, named pod-0, pod-1, ... (scraped `now`)."""
    registry = EndpointRegistry()
    registry.set_endpoints(
        Endpoint(f"pod-{i}", f"10.0.0.{i + 1}", 8000) for i in range(len(metrics))
    )
    for i, m in enumerate(metrics):
        mark = registry.begin_scrape(f"pod-{i}")
        assert mark is not None
        m.updated_at = now
        registry.record_scrape(mark, m)
    return registry


def scheduler(yaml_text: str, seed: int = 7) -> Scheduler:
    return Scheduler.from_config(load_config(yaml_text, "test.yaml"), random.Random(seed))


def names(states: tuple[EndpointState, ...] | list[EndpointState]) -> list[str]:
    return [s.name for s in states]
