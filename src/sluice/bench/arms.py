"""The arms compared: how each one decides *when* (flow control, room rule) and *where*
(scheduler). Each `Arm` builds fresh state per run, so no cache or index leaks between runs.

Plain routers (random, round-robin, least-queue) and upstream's default profile run without
a queue (`flowControl.mode: legacy`, upstream's default admission); Sluice's arms queue.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sluice.bench.workloads import MODEL
from sluice.config import default_config, load_config, load_sluice_config
from sluice.datalayer.registry import EndpointState
from sluice.flowcontrol.config import LEGACY, FlowControlConfig
from sluice.requests.model import InferenceRequest
from sluice.room import RoomSettings
from sluice.scheduling.defaults import DEFAULT_CONFIG_YAML, UPSTREAM_DEFAULT_CONFIG_YAML
from sluice.scheduling.framework import (
    NoEndpointsError,
    ProfileResult,
    SchedulingResult,
    ScoredEndpoint,
)
from sluice.scheduling.record import CycleRecord
from sluice.scheduling.scheduler import Scheduler


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    make_scheduler: Callable[[random.Random], Scheduler]
    flow: FlowControlConfig
    room: RoomSettings
    config_yaml: str = ""  # the EndpointPickerConfig it uses, for the report
    # engine settings the arm needs (e.g. scheduling_policy "priority" for engine priority)
    engine_overrides: Mapping[str, object] = field(default_factory=dict)

    @property
    def queues(self) -> bool:
        return self.flow.mode != LEGACY


_LEGACY = FlowControlConfig(mode=LEGACY)

_RANDOM_YAML = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: random-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: random-picker}
"""

_LEAST_QUEUE_YAML = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 1}
  - {pluginRef: max-score-picker}
"""


class RoundRobinScheduler(Scheduler):
    """No plugin does round-robin; this is the classic load balancer, for the baseline."""

    _next = 0

    def schedule(
        self,
        request: InferenceRequest,
        endpoints: Sequence[EndpointState],
        now: float,
        record: CycleRecord | None = None,
    ) -> SchedulingResult:
        if not endpoints:
            raise NoEndpointsError("no endpoints available")
        ordered = sorted(endpoints, key=lambda s: s.endpoint.name)
        start = self._next % len(ordered)
        self._next += 1
        rotated = ordered[start:] + ordered[:start]
        targets = tuple(ScoredEndpoint(s.endpoint, 1.0) for s in rotated)
        return SchedulingResult({"default": ProfileResult(targets)}, "default")


def _from_yaml(text: str, cls: type[Scheduler] = Scheduler) -> Callable[[random.Random], Scheduler]:
    config = load_config(text, "<bench arm>")
    return lambda rng: cls.from_config(config, rng)


def plain_router(
    name: str, description: str, yaml_text: str, cls: type[Scheduler] = Scheduler
) -> Arm:
    """A router without Sluice's room: no queue, and placement as the router itself does it
    (none of Sluice's steering of prefills)."""
    room = RoomSettings(steer_prefills=False)
    return Arm(name, description, _from_yaml(yaml_text, cls), _LEGACY, room, yaml_text)


def sluice_arm(
    name: str,
    description: str,
    yaml_text: str | None = None,
    *,
    room: RoomSettings | None = None,
) -> Arm:
    """An arm from a full Sluice config (picker + flowControl + saturationDetector); `room`
    replaces the room rule the config implies (for sweeps of the rule itself)."""
    config = load_sluice_config(yaml_text)
    picker = config.picker
    return Arm(
        name,
        description,
        lambda rng: Scheduler.from_config(picker, rng),
        config.flow,
        room or config.room,
        yaml_text or DEFAULT_CONFIG_YAML,
    )


# Sluice's default profile with the engines' KV events instead of the approximate index: the
# engines publish (vLLM's --kv-events-config) and hash with PYTHONHASHSEED=0, as the config says.
PRECISE_HASH_SEED = "0"
PRECISE_CONFIG_YAML = DEFAULT_CONFIG_YAML.replace(
    "- type: prefix-cache-scorer\n",
    "- type: precise-prefix-cache-scorer\n"
    "  name: prefix-cache-scorer\n"
    "  parameters:\n"
    f"    tokenProcessorConfig: {{blockSizeTokens: 16, hashSeed: '{PRECISE_HASH_SEED}'}}\n"
    f"    indexerConfig: {{tokenizersPoolConfig: {{modelName: {MODEL}}}}}\n"
    "    speculativeIndexing: true\n",
)


def precise_arm() -> Arm:
    arm = sluice_arm(
        "sluice-precise",
        "Sluice's default config with precise-prefix-cache-scorer (engines' KV events)",
        PRECISE_CONFIG_YAML,
    )
    return replace(
        arm,
        engine_overrides={"enable_kv_cache_events": True, "hash_seed": PRECISE_HASH_SEED},
    )


def standard_arms() -> dict[str, Arm]:
    """The five arms every scenario runs, by name."""
    arms = [
        plain_router("random", "uniformly random endpoint, no queue", _RANDOM_YAML),
        plain_router(
            "round-robin", "rotate over endpoints, no queue", _RANDOM_YAML, RoundRobinScheduler
        ),
        plain_router(
            "least-queue", "fewest waiting requests (last scrape), no queue", _LEAST_QUEUE_YAML
        ),
        plain_router(
            "upstream-default",
            "upstream's default profile (queue 2, kv 2, prefix 3), legacy admission",
            UPSTREAM_DEFAULT_CONFIG_YAML,
        ),
        sluice_arm("sluice-default", "Sluice's default config: flow control on"),
        precise_arm(),  # not in STANDARD_ARM_NAMES: the KV-event scenarios name it
    ]
    return {arm.name: arm for arm in arms}


def with_room(arm: Arm, name: str, **changes: object) -> Arm:
    """The same arm with a different room rule (e.g. queue_depth=0, max_in_flight_requests=8)."""
    return replace(arm, name=name, room=replace(arm.room, **changes))  # type: ignore[arg-type]


STANDARD_ARM_NAMES = ("random", "round-robin", "least-queue", "upstream-default", "sluice-default")


def sluice_yaml(
    weights: dict[str, float],
    *,
    extra: str = "",
    parameters: dict[str, dict[str, object]] | None = None,
) -> str:
    """A Sluice config with the given scorer weights (plugin type -> weight) and max-score
    picker; `parameters` per plugin type; `extra` is appended verbatim (e.g. a
    saturationDetector or flowControl block)."""
    given = parameters or {}
    plugins = "".join(
        f"- type: {t}\n" + (f"  parameters: {json.dumps(given[t])}\n" if given.get(t) else "")
        for t in weights
    )
    refs = "".join(f"  - {{pluginRef: {t}, weight: {w:g}}}\n" for t, w in weights.items())
    return (
        "apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
        "kind: EndpointPickerConfig\n"
        f"plugins:\n{plugins}- type: max-score-picker\n"
        "schedulingProfiles:\n- name: default\n  plugins:\n"
        f"{refs}  - {{pluginRef: max-score-picker}}\n{extra}"
    )


_WEIGHT_KEYS = {
    "prefix": "prefix-cache-scorer",
    "load": "in-flight-load-scorer",
    "queue": "queue-scorer",
    "kv": "kv-cache-utilization-scorer",
    "running": "running-requests-size-scorer",
    "lora": "lora-affinity-scorer",
    "prefillcost": "prefill-cost-scorer",
}


def _default_weights() -> dict[str, float]:
    """The weights of Sluice's default profile, by arm key (variants start from these)."""
    by_type = {ref.plugin_ref: ref.weight for ref in default_config().profiles[0].plugins}
    types = {spec.name: spec.type for spec in default_config().plugins}
    weights = {key: 0.0 for key in _WEIGHT_KEYS}
    for key, plugin_type in _WEIGHT_KEYS.items():
        for name, weight in by_type.items():
            if types.get(name) == plugin_type:
                weights[key] = float(weight)
    return weights


def _default_parameters() -> dict[str, dict[str, object]]:
    """The parameters Sluice's default profile gives its plugins, by plugin type."""
    plugins = default_config().plugins
    return {spec.type: dict(spec.parameters) for spec in plugins if spec.parameters}


def _cap(value: str) -> int | None:
    """A cap in an arm name: `none` or 0 turns it off, as 0 does in the YAML."""
    return None if value == "none" else int(value) or None


def arm_by_name(name: str) -> Arm:
    """A standard arm, or a variant of Sluice's default written
    `sluice@prefix=3,load=2,queue=1,kv=1,qd=5,inflight=32,lowinflight=24,prefill=4096,eprio=1`
    (weights of the scorers, then the room rule: queue depth, per-endpoint in-flight cap
    (`none`: no cap), the cap for bands below the top priority, pending prefill tokens per
    endpoint, unseen dispatches (`unseen`), KV threshold (`kvmax`), endpoints a band's heavy
    hitter leaves to the rest of its band (`headroom`), how close to its expected end a pending
    prefill stops filling the budget for the highest band (`ending`, seconds) and counts as
    room kept for the rest of a heavy hitter's band (`bgending`), how long a reserve outlives
    its user's last arrival (`holdgaps`, `holdmin`, `holdmax` in seconds), `steer=0` to place
    without keeping prefills of different bands apart, `kvcount=0` for upstream's KV scorer
    (the page's usage alone, not Sluice's dispatches since); `sharewin` is flow control's
    fair-share window in seconds (0: no heavy hitters); `eprio=1` forwards the band as the
    engine's priority (engines run the priority policy)). Unnamed weights and knobs keep the
    default's."""
    standard = standard_arms()
    if name in standard:
        return standard[name]
    base, _, spec = name.partition("@")
    if base != "sluice" or not spec:
        known = ", ".join([*standard, "sluice@key=value,..."])
        raise ValueError(f"unknown arm {name!r}; known: {known}")
    weights = _default_weights()
    parameters = _default_parameters()
    room: dict[str, object] = {}
    flow: dict[str, object] = {}
    engine_priority = False
    for part in spec.split(","):
        key, _, value = part.partition("=")
        if key in _WEIGHT_KEYS:
            weights[key] = float(value)
        elif key == "qd":
            room["queue_depth"] = int(value)
        elif key == "inflight":
            room["max_in_flight_requests"] = _cap(value)
        elif key == "lowinflight":
            room["lower_priority_max_in_flight"] = _cap(value)
        elif key == "prefill":
            room["max_pending_prefill_tokens"] = _cap(value)
        elif key == "unseen":
            room["max_unseen_requests"] = int(value)
        elif key == "kvmax":
            room["kv_cache_util"] = float(value)
        elif key == "headroom":
            room["background_headroom_endpoints"] = int(value)
        elif key == "ending":
            room["prefill_ending_s"] = float(value)
        elif key == "bgending":
            room["background_ending_s"] = float(value)
        elif key == "holdgaps":
            room["reserve_hold_gaps"] = float(value)
        elif key == "holdmin":
            room["reserve_hold_min_s"] = float(value)
            room.setdefault("reserve_hold_max_s", max(float(value), 30.0))
        elif key == "holdmax":
            room["reserve_hold_max_s"] = float(value)
        elif key == "sharewin":
            flow["fair_share_window_s"] = float(value)
        elif key == "steer":
            room["steer_prefills"] = value not in ("0", "off", "false")
        elif key == "eprio":
            engine_priority = value not in ("0", "off", "false")
        elif key == "kvcount":
            kv = parameters.setdefault(_WEIGHT_KEYS["kv"], {})
            kv["countDispatched"] = value not in ("0", "off", "false")
        else:
            raise ValueError(f"arm {name!r}: unknown key {key!r}")
    yaml_text = sluice_yaml(
        {_WEIGHT_KEYS[k]: v for k, v in weights.items() if v > 0}, parameters=parameters
    )
    arm = sluice_arm(name, f"Sluice variant: {spec}", yaml_text)
    arm = replace(
        arm,
        room=replace(arm.room, **room),  # type: ignore[arg-type]
        flow=replace(arm.flow, **flow),  # type: ignore[arg-type]
    )
    if engine_priority:
        arm = replace(
            arm,
            flow=replace(arm.flow, engine_priority=True),
            engine_overrides={"scheduling_policy": "priority"},
        )
    return arm
