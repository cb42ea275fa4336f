"""Small builders shared by the simulator tests."""

from __future__ import annotations

from dataclasses import replace

from sluice.sim.engine import Engine
from sluice.sim.profiles import PROFILES, CostProfile
from sluice.sim.request import SimRequest
from sluice.sim.virtual import Completed, Event, VirtualCluster

H100 = PROFILES["llama-8b-h100"]


def engine(cost: CostProfile | None = None, **config: object) -> Engine:
    """An 8B/H100 engine with some capacity knobs overridden."""
    return Engine(replace(H100.engine, **config), cost or H100.cost)  # type: ignore[arg-type]


def request(rid: str, prompt_tokens: int, max_tokens: int = 8, **fields: object) -> SimRequest:
    """A request of exactly ``prompt_tokens`` tokens, with unique (uncacheable) content."""
    return SimRequest.from_text(
        rid, f"{rid}:".ljust(4 * prompt_tokens, "x"), max_tokens=max_tokens, **fields
    )  # type: ignore[arg-type]


def run_alone(req: SimRequest, eng: Engine | None = None) -> Completed:
    cluster = VirtualCluster({"e": eng or engine()})
    cluster.submit("e", req)
    return completed(cluster.run())[req.request_id]


def completed(events: list[Event]) -> dict[str, Completed]:
    return {e.request_id: e for e in events if isinstance(e, Completed)}
