"""The real director on a pool of given endpoints, for the front ends' contract tests.

Engines are represented by the registry's metrics, as a scrape would set them: `report` makes
every endpoint fresh with a queue of `waiting`; an endpoint never reported has stale metrics and
so no room (every request queues). Staleness is long (60 s) so a report holds for a whole test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sluice.api import parse_resource
from sluice.config import load_sluice_config
from sluice.datalayer.endpoint import EngineMetrics
from sluice.datalayer.registry import EndpointRegistry
from sluice.director import Director
from sluice.flowcontrol.config import FlowControlConfig
from sluice.flowcontrol.controller import FlowController
from sluice.room import RoomSettings
from sluice.scheduling.scheduler import Scheduler
from sluice.sources.state import PodInfo, PoolKey, PoolState, Snapshot, build_state

KEY = PoolKey("pool", "default")
# The objectives the tests name, by priority.
OBJECTIVES = {"interactive": 10, "batch": -1}
# A picker config whose filter keeps only the endpoints a header names: without it, none is
# left (the scheduler's filters drain every candidate).
DRAINING_FILTER = """
plugins:
- type: header-based-testing-filter
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins: [{pluginRef: header-based-testing-filter}, {pluginRef: max-score-picker}]
"""


def pool_state(
    ports: Sequence[int], address: str = "127.0.0.1", objectives: Mapping[str, int] = OBJECTIVES
) -> PoolState:
    """One pod at `address` serving on `ports` (endpoints `p-rank-0`, `p-rank-1`, ...); no
    ports is a pool with no endpoints."""
    snapshot = Snapshot()
    snapshot.pools["default/pool"] = parse_resource(
        {
            "apiVersion": "inference.networking.k8s.io/v1",
            "kind": "InferencePool",
            "metadata": {"name": "pool", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "llm"}},
                "targetPorts": [{"number": p} for p in ports or (8000,)],
                "endpointPickerRef": {"name": "sluice", "port": {"number": 9002}},
            },
        }
    )
    for name, priority in objectives.items():
        snapshot.objectives[f"default/{name}"] = parse_resource(
            {
                "apiVersion": "llm-d.ai/v1alpha2",
                "kind": "InferenceObjective",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"priority": priority, "poolRef": {"name": "pool"}},
            }
        )
    if ports:
        snapshot.pods["default/p"] = PodInfo("p", "default", {"app": "llm"}, address, True)
    return build_state(KEY, snapshot)


def make_director(
    flow: FlowControlConfig | None = None,
    room: RoomSettings | None = None,
    ports: Sequence[int] = (8000,),
    address: str = "127.0.0.1",
    config_text: str | None = None,
) -> Director:
    """`config_text`: an EndpointPickerConfig whose scheduling profiles to use (default: none,
    Sluice's default profile); flow control and the room come from the arguments."""
    config = load_sluice_config(config_text)
    director = Director(
        scheduler=Scheduler.from_config(config.picker),
        flow=FlowController(flow or config.flow),
        registry=EndpointRegistry(),
        room=room or replace(config.room, metrics_staleness_s=60.0),
    )
    director.set_state(pool_state(ports, address))
    return director


def report(director: Director, waiting: int = 0) -> None:
    """Every endpoint reports `waiting` queued requests, fresh now; then the director pumps."""
    now = director.clock()
    for state in director.registry.snapshot():
        mark = director.registry.begin_scrape(state.name)
        assert mark is not None
        director.registry.record_scrape(mark, EngineMetrics(waiting=waiting, updated_at=now))
    director.pump()
