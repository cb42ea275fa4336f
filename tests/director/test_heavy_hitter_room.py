"""The pipeline's room for a band's heavy hitter: with the default config, a tenant sending
long prompts at most of the pool's capacity leaves one engine free of them, so a light
tenant's request is released at once onto an engine with no long prefill ahead of it."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

from sluice.bench.harness.core import core_from_config
from sluice.config import load_sluice_config
from sluice.datalayer.endpoint import Endpoint, EngineMetrics
from sluice.director import DispatchCore, DispatchedRequest
from sluice.flowcontrol.model import Ticket
from sluice.requests.errors import SluiceError
from sluice.requests.model import InferenceRequest
from sluice.sources.state import PoolKey, PoolState

ENGINES = 4
_prompts = itertools.count()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def pipeline(config_text: str | None = None) -> tuple[DispatchCore, Clock, list[DispatchedRequest]]:
    config = load_sluice_config(config_text)
    clock = Clock()
    placed: list[DispatchedRequest] = []

    def released(ticket: Ticket, result: DispatchedRequest | SluiceError) -> None:
        assert isinstance(result, DispatchedRequest)
        placed.append(result)

    core = core_from_config(config, released)
    endpoints = tuple(Endpoint(f"pod-{i}", f"10.0.0.{i + 1}", 8000) for i in range(ENGINES))
    core.set_state(
        PoolState(PoolKey("pool", "ns"), pool=SimpleNamespace(), endpoints=endpoints), clock.now
    )
    for state in core.registry.snapshot():  # every engine idle, metrics fresh
        mark = core.registry.begin_scrape(state.name)
        assert mark is not None
        core.registry.record_scrape(mark, EngineMetrics(updated_at=clock.now))
    return core, clock, placed


def chat(core: DispatchCore, tenant: str, words: int) -> InferenceRequest:
    """A prompt of about `words` tokens that shares no prefix with any other."""
    tag = next(_prompts)
    content = " ".join(f"w{tag}-{i}" for i in range(words))
    body = json.dumps(
        {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": content}]}
    ).encode()
    return core.parse({"x-gateway-inference-fairness-id": tenant}, body)


def submit(core: DispatchCore, request: InferenceRequest, now: float) -> None:
    core.submit(request, now)
    core.pump(now)


def long_prefills(core: DispatchCore) -> int:
    return sum(1 for s in core.registry.snapshot() if s.pending_prefill_tokens > 1000)


def test_the_light_tenant_finds_an_engine_free_of_the_heavy_tenants_prefills() -> None:
    core, clock, placed = pipeline()
    submit(core, chat(core, "light", 20), clock.now)
    for _ in range(8):
        submit(core, chat(core, "heavy", 3000), clock.now)
    # One engine took the light request, one the heavy tenant's first; from then on the heavy
    # tenant is the band's heavy hitter and leaves the last engine with room alone.
    assert [p.request.fairness_id for p in placed] == ["light", "heavy", "heavy"]
    assert long_prefills(core) == 2
    clock.now = 0.1
    submit(core, chat(core, "light", 20), clock.now)
    last = placed[-1]
    assert last.request.fairness_id == "light"
    endpoint = core.registry.get(last.endpoint.name)
    assert endpoint is not None and endpoint.pending_prefill_tokens < 1000


def test_with_the_window_off_the_heavy_tenant_takes_every_engine() -> None:
    core, clock, placed = pipeline("flowControl:\n  fairShareWindow: 0\n")
    submit(core, chat(core, "light", 20), clock.now)
    for _ in range(8):
        submit(core, chat(core, "heavy", 3000), clock.now)
    assert long_prefills(core) == ENGINES - 1
    clock.now = 0.1
    submit(core, chat(core, "light", 20), clock.now)
    assert placed[-1].request.fairness_id == "heavy"  # the light request waits
