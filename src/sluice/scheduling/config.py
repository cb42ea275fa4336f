"""Loading upstream's `EndpointPickerConfig` (facts §5.4), strictly and with line numbers.

Accepted unchanged: apiVersion, kind, featureGates, plugins, schedulingProfiles,
saturationDetector, data. Sluice's own top-level `flowControl:` block is passed through raw
(`flow_control_raw`) for the flow-control package to parse. Every unknown key, plugin type or
reference is an error like `config.yaml:12: plugins[2].type: unknown plugin type "foo"; …`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from sluice.scheduling import registry as plugin_registry
from sluice.scheduling.params import ConfigError, Params
from sluice.util import durations

API_VERSION = "inference.networking.x-k8s.io/v1alpha1"
KIND = "EndpointPickerConfig"
FEATURE_GATES = frozenset({"dataLayer", "flowControl", "prepareDataPlugins"})
_TOP_LEVEL = (
    "apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles",
    "saturationDetector", "data", "flowControl",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PluginSpec:
    name: str
    type: str
    parameters: Mapping[str, Any]
    where: str  # "plugins[2]"
    location: str  # "config.yaml:12"
    parameter_lines: Mapping[str, str] = field(default_factory=dict)

    def params(self) -> Params:
        return Params(
            self.parameters,
            where=f"{self.where}.parameters",
            lines=self.parameter_lines,
            location=self.location,
        )


@dataclass(frozen=True, slots=True)
class ProfilePluginRef:
    plugin_ref: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    name: str
    plugins: tuple[ProfilePluginRef, ...]


@dataclass(frozen=True, slots=True)
class SaturationDetectorConfig:
    queue_depth_threshold: int = 5
    kv_cache_util_threshold: float = 0.8
    metrics_staleness_threshold_s: float = 0.2
    # Sluice's own room rule (docs/flowcontrol.md): caps on requests Sluice has in flight per
    # endpoint (all bands, and bands below the pool's top priority) and on prompt tokens still
    # waiting for their first byte. The defaults were chosen with `sluice bench` (the README's
    # performance tables); 0 in the YAML turns a cap off.
    max_in_flight_per_endpoint: int | None = None
    max_in_flight_per_endpoint_below_top_priority: int | None = 64
    max_pending_prefill_tokens_per_endpoint: int | None = 1
    # Endpoints with room that a band's heavy hitter leaves to the rest of its band (0: none).
    background_headroom_endpoints: int = 1
    # The room's prefill-time prior and cap, and how long a reserve outlives its last user's
    # arrival (sluice.room.RoomSettings; docs/room.md).
    prefill_tokens_per_s: float = 2500.0
    prefill_overhead_s: float = 0.025
    max_prefill_hold_s: float = 30.0
    reserve_hold_gaps: float = 10.0
    reserve_hold_min_s: float = 2.0
    reserve_hold_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class EndpointPickerConfig:
    """The scheduling part of Sluice's YAML, after upstream's defaulting."""

    plugins: tuple[PluginSpec, ...]
    profiles: tuple[ProfileSpec, ...]
    feature_gates: frozenset[str] = frozenset()
    saturation_detector: SaturationDetectorConfig = SaturationDetectorConfig()
    data_raw: Mapping[str, Any] | None = None
    flow_control_raw: Mapping[str, Any] | None = None
    source: str = "<config>"

    def plugin(self, name: str) -> PluginSpec:
        return next(p for p in self.plugins if p.name == name)


# -- YAML with line numbers ---------------------------------------------------------------------

_constructor = yaml.SafeLoader("")


class _Doc:
    def __init__(self, source: str) -> None:
        self.source = source

    def loc(self, node: yaml.Node) -> str:
        return f"{self.source}:{node.start_mark.line + 1}"

    def error(self, node: yaml.Node, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.loc(node)}: {path}: {message}")

    def value(self, node: yaml.Node) -> Any:
        return _constructor.construct_object(node, deep=True)

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, path, "expected a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            sub = f"{path}.{key}" if path else str(key)
            if key not in allowed:
                raise self.error(
                    key_node, sub, f"unknown field {key!r}; known fields: {', '.join(allowed)}"
                )
            if key in out:
                raise self.error(key_node, sub, "duplicate field")
            out[key] = (key_node, value_node)
        return out

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, path, "expected a list")
        return list(node.value)

    def string(self, node: yaml.Node, path: str) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value:
            raise self.error(node, path, f"expected a non-empty string, got {value!r}")
        return value


def parse_duration(text: str) -> float:
    """Go-style duration (`200ms`, `1m30s`) or a bare number of seconds → seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    return durations.parse_duration(str(text))


# -- loading ------------------------------------------------------------------------------------


def load_config(text: str, source: str = "<config>") -> EndpointPickerConfig:
    """Parse, validate and default a config; plugin parameters are validated too."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    doc = _Doc(source)
    if root is None:
        raise ConfigError(f"{source}: empty config")
    top = doc.mapping(root, "", _TOP_LEVEL)
    _check_header(doc, top)
    gates = _feature_gates(doc, top)
    plugins = _plugins(doc, top)
    located_profiles = _profiles(doc, top)
    saturation = _saturation(doc, top)
    data_raw = doc.value(top["data"][1]) if "data" in top else None
    if "dataLayer" in gates and data_raw is None:
        raise ConfigError(f"{source}: data: required when the dataLayer feature gate is on")
    flow_raw = doc.value(top["flowControl"][1]) if "flowControl" in top else None
    all_plugins, profiles = _apply_defaults(doc, top, plugins, located_profiles)
    config = EndpointPickerConfig(
        plugins=all_plugins,
        profiles=profiles,
        feature_gates=gates,
        saturation_detector=saturation,
        data_raw=data_raw,
        flow_control_raw=flow_raw,
        source=source,
    )
    for spec in all_plugins:  # dry-build: parameter errors surface at load time
        plugin_registry.create(spec.type, spec.name, spec.params(), plugin_registry.PluginContext())
    return config


def _check_header(doc: _Doc, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key in top:
            value = doc.value(top[key][1])
            if value != expected:
                raise doc.error(top[key][1], key, f"expected {expected!r}, got {value!r}")


def _feature_gates(doc: _Doc, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> frozenset[str]:
    if "featureGates" not in top:
        return frozenset()
    gates: set[str] = set()
    for i, node in enumerate(doc.sequence(top["featureGates"][1], "featureGates")):
        gate = doc.string(node, f"featureGates[{i}]")
        if gate not in FEATURE_GATES:
            known = ", ".join(sorted(FEATURE_GATES))
            raise doc.error(
                node, f"featureGates[{i}]", f"unknown feature gate {gate!r}; known: {known}"
            )
        gates.add(gate)
    return frozenset(gates)


def _plugins(doc: _Doc, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> list[PluginSpec]:
    specs: list[PluginSpec] = []
    seen: dict[str, str] = {}
    nodes = doc.sequence(top["plugins"][1], "plugins") if "plugins" in top else []
    for i, node in enumerate(nodes):
        where = f"plugins[{i}]"
        fields = doc.mapping(node, where, ("name", "type", "parameters"))
        if "type" not in fields:
            raise doc.error(node, f"{where}.type", "missing required field")
        type_node = fields["type"][1]
        type_name = doc.string(type_node, f"{where}.type")
        if (
            plugin_registry.plugin_kind(type_name) is None
            and type_name not in plugin_registry.known_types()
        ):
            known = ", ".join(plugin_registry.known_types())
            raise doc.error(
                type_node,
                f"{where}.type",
                f"unknown plugin type {type_name!r}; known types: {known}",
            )
        name = doc.string(fields["name"][1], f"{where}.name") if "name" in fields else type_name
        if name in seen:
            raise doc.error(
                node, f"{where}.name", f"duplicate plugin name {name!r} (also {seen[name]})"
            )
        seen[name] = where
        parameters: dict[str, Any] = {}
        lines: dict[str, str] = {}
        if "parameters" in fields:
            pnode = fields["parameters"][1]
            if not (isinstance(pnode, yaml.ScalarNode) and pnode.tag.endswith(":null")):
                if not isinstance(pnode, yaml.MappingNode):
                    raise doc.error(pnode, f"{where}.parameters", "expected a mapping")
                for key_node, value_node in pnode.value:
                    key = str(doc.value(key_node))
                    parameters[key] = doc.value(value_node)
                    lines[key] = doc.loc(key_node)
        specs.append(PluginSpec(name, type_name, parameters, where, doc.loc(node), lines))
    return specs


def _profiles(
    doc: _Doc, top: dict[str, tuple[yaml.Node, yaml.Node]]
) -> list[tuple[ProfileSpec, list[yaml.Node]]]:
    out: list[tuple[ProfileSpec, list[yaml.Node]]] = []
    nodes = (
        doc.sequence(top["schedulingProfiles"][1], "schedulingProfiles")
        if "schedulingProfiles" in top
        else []
    )
    names: set[str] = set()
    for i, node in enumerate(nodes):
        where = f"schedulingProfiles[{i}]"
        fields = doc.mapping(node, where, ("name", "plugins"))
        if "name" not in fields:
            raise doc.error(node, f"{where}.name", "missing required field")
        name = doc.string(fields["name"][1], f"{where}.name")
        if name in names:
            raise doc.error(fields["name"][1], f"{where}.name", f"duplicate profile name {name!r}")
        names.add(name)
        refs: list[ProfilePluginRef] = []
        ref_nodes: list[yaml.Node] = []
        plugin_nodes = (
            doc.sequence(fields["plugins"][1], f"{where}.plugins") if "plugins" in fields else []
        )
        for j, ref_node in enumerate(plugin_nodes):
            rwhere = f"{where}.plugins[{j}]"
            rfields = doc.mapping(ref_node, rwhere, ("pluginRef", "weight"))
            if "pluginRef" not in rfields:
                raise doc.error(ref_node, f"{rwhere}.pluginRef", "missing required field")
            ref = doc.string(rfields["pluginRef"][1], f"{rwhere}.pluginRef")
            weight = 1.0
            if "weight" in rfields:
                raw = doc.value(rfields["weight"][1])
                if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
                    raise doc.error(
                        rfields["weight"][1],
                        f"{rwhere}.weight",
                        f"expected a number >= 0, got {raw!r}",
                    )
                weight = float(raw)
            refs.append(ProfilePluginRef(ref, weight))
            ref_nodes.append(ref_node)
        out.append((ProfileSpec(name, tuple(refs)), ref_nodes))
    return out


def _saturation(doc: _Doc, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> SaturationDetectorConfig:
    if "saturationDetector" not in top:
        return SaturationDetectorConfig()
    where = "saturationDetector"
    fields = doc.mapping(
        top[where][1],
        where,
        (
            "queueDepthThreshold",
            "kvCacheUtilThreshold",
            "metricsStalenessThreshold",
            "maxInFlightPerEndpoint",
            "maxInFlightPerEndpointBelowTopPriority",
            "maxPendingPrefillTokensPerEndpoint",
            "backgroundHeadroomEndpoints",
            "prefillTokensPerSecond",
            "prefillOverhead",
            "maxPrefillHold",
            "reserveHoldGaps",
            "reserveHoldMin",
            "reserveHoldMax",
        ),
    )
    default = SaturationDetectorConfig()
    queue, kv, stale = (
        default.queue_depth_threshold,
        default.kv_cache_util_threshold,
        default.metrics_staleness_threshold_s,
    )
    # Upstream: a value <= 0 means "use the default".
    if "queueDepthThreshold" in fields:
        node = fields["queueDepthThreshold"][1]
        value = doc.value(node)
        if isinstance(value, bool) or not isinstance(value, int):
            raise doc.error(
                node, f"{where}.queueDepthThreshold", f"expected an integer, got {value!r}"
            )
        queue = value if value > 0 else queue
    if "kvCacheUtilThreshold" in fields:
        node = fields["kvCacheUtilThreshold"][1]
        value = doc.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or value >= 1:
            raise doc.error(
                node, f"{where}.kvCacheUtilThreshold", f"expected a number in (0, 1), got {value!r}"
            )
        kv = float(value) if value > 0 else kv
    if "metricsStalenessThreshold" in fields:
        node = fields["metricsStalenessThreshold"][1]
        try:
            seconds = parse_duration(doc.value(node))
        except ValueError as exc:
            raise doc.error(node, f"{where}.metricsStalenessThreshold", str(exc)) from None
        stale = seconds if seconds > 0 else stale
    default = SaturationDetectorConfig()
    cap = _cap(doc, fields, where, "maxInFlightPerEndpoint", default.max_in_flight_per_endpoint)
    lower_cap = _cap(
        doc,
        fields,
        where,
        "maxInFlightPerEndpointBelowTopPriority",
        default.max_in_flight_per_endpoint_below_top_priority,
    )
    exceeds = cap is not None and lower_cap is not None and lower_cap > cap
    if exceeds and "maxInFlightPerEndpointBelowTopPriority" not in fields:
        lower_cap, exceeds = cap, False  # the default never exceeds a cap the user set
    if exceeds:
        raise doc.error(
            fields["maxInFlightPerEndpointBelowTopPriority"][1],
            f"{where}.maxInFlightPerEndpointBelowTopPriority",
            f"must be at most maxInFlightPerEndpoint ({cap}): lower bands never get more room",
        )
    prefill = _cap(
        doc,
        fields,
        where,
        "maxPendingPrefillTokensPerEndpoint",
        default.max_pending_prefill_tokens_per_endpoint,
    )
    headroom = _cap(
        doc, fields, where, "backgroundHeadroomEndpoints", default.background_headroom_endpoints
    )
    rate = _positive(doc, fields, where, "prefillTokensPerSecond", default.prefill_tokens_per_s)
    overhead = _seconds(doc, fields, where, "prefillOverhead", default.prefill_overhead_s)
    hold = _seconds(doc, fields, where, "maxPrefillHold", default.max_prefill_hold_s, zero=False)
    gaps = _positive(doc, fields, where, "reserveHoldGaps", default.reserve_hold_gaps)
    hold_min = _seconds(doc, fields, where, "reserveHoldMin", default.reserve_hold_min_s)
    hold_max = _seconds(doc, fields, where, "reserveHoldMax", default.reserve_hold_max_s)
    if hold_max < hold_min:
        entry = fields.get("reserveHoldMax") or fields["reserveHoldMin"]
        raise doc.error(
            entry[1],
            f"{where}.reserveHoldMax",
            f"must be at least reserveHoldMin ({hold_min:g}s)",
        )
    return SaturationDetectorConfig(
        queue,
        kv,
        stale,
        cap,
        lower_cap,
        prefill,
        headroom or 0,
        rate,
        overhead,
        hold,
        gaps,
        hold_min,
        hold_max,
    )


def _positive(
    doc: _Doc,
    fields: dict[str, tuple[yaml.Node, yaml.Node]],
    where: str,
    key: str,
    default: float,
) -> float:
    if key not in fields:
        return default
    node = fields[key][1]
    value = doc.value(node)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e12:
        raise doc.error(node, f"{where}.{key}", f"expected a number > 0, got {value!r}")
    return float(value)


def _seconds(
    doc: _Doc,
    fields: dict[str, tuple[yaml.Node, yaml.Node]],
    where: str,
    key: str,
    default: float,
    *,
    zero: bool = True,
) -> float:
    """A duration (`2s`, `500ms`, or seconds); `zero` False: it must be > 0."""
    if key not in fields:
        return default
    node = fields[key][1]
    try:
        seconds = parse_duration(doc.value(node))
    except ValueError as exc:
        raise doc.error(node, f"{where}.{key}", str(exc)) from None
    if seconds < 0 or (not zero and seconds == 0):
        bound = ">= 0" if zero else "> 0"
        raise doc.error(node, f"{where}.{key}", f"expected a duration {bound}, got {seconds:g}s")
    return seconds


def _cap(
    doc: _Doc,
    fields: dict[str, tuple[yaml.Node, yaml.Node]],
    where: str,
    key: str,
    default: int | None,
) -> int | None:
    """A Sluice cap: absent → the default, 0 → off, else a positive integer."""
    if key not in fields:
        return default
    node = fields[key][1]
    value = doc.value(node)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise doc.error(
            node, f"{where}.{key}", f"expected an integer >= 0 (0 turns it off), got {value!r}"
        )
    return value or None


def _apply_defaults(
    doc: _Doc,
    top: dict[str, tuple[yaml.Node, yaml.Node]],
    plugins: list[PluginSpec],
    profiles: list[tuple[ProfileSpec, list[yaml.Node]]],
) -> tuple[tuple[PluginSpec, ...], tuple[ProfileSpec, ...]]:
    """Upstream's defaults.go: default profile, single-profile-handler, max-score-picker."""
    kinds = {p.name: plugin_registry.plugin_kind(p.type) for p in plugins}
    by_name = {p.name: p for p in plugins}
    for p_index, (profile, ref_nodes) in enumerate(profiles):
        for j, (ref, node) in enumerate(zip(profile.plugins, ref_nodes)):
            if ref.plugin_ref not in by_name:
                known = ", ".join(by_name) or "none"
                raise doc.error(
                    node,
                    f"schedulingProfiles[{p_index}].plugins[{j}].pluginRef",
                    f"unknown plugin {ref.plugin_ref!r}; defined plugins: {known}",
                )
            if kinds[ref.plugin_ref] in ("profile-handler", "data"):
                raise doc.error(
                    node,
                    f"profile {profile.name!r}",
                    f"plugin {ref.plugin_ref!r} cannot be used in a profile",
                )
    specs = [p for p, _ in profiles]
    if not specs:
        refs = tuple(
            ProfilePluginRef(p.name)
            for p in plugins
            if kinds[p.name] in ("filter", "scorer", "picker")
        )
        specs = [ProfileSpec("default", refs)]
    handlers = [p for p in plugins if kinds[p.name] == "profile-handler"]
    loc = doc.loc(top["plugins"][0]) if "plugins" in top else doc.source
    if len(handlers) > 1:
        raise ConfigError(
            f"{loc}: plugins: more than one profile handler: {', '.join(h.name for h in handlers)}"
        )
    if not handlers:
        if len(specs) > 1:
            raise ConfigError(
                f"{loc}: schedulingProfiles: {len(specs)} profiles need a profile handler plugin"
            )
        plugins.append(
            PluginSpec(
                "single-profile-handler", "single-profile-handler", {}, "plugins[default]", loc
            )
        )
    elif handlers[0].type == "single-profile-handler" and len(specs) > 1:
        raise ConfigError(
            f"{loc}: single-profile-handler requires exactly one profile, got {len(specs)}"
        )
    pickers = [p for p in plugins if kinds.get(p.name) == "picker"]
    for i, spec in enumerate(specs):
        if any(kinds.get(r.plugin_ref) == "picker" for r in spec.plugins):
            continue
        if not pickers:
            plugins.append(
                PluginSpec("max-score-picker", "max-score-picker", {}, "plugins[default]", loc)
            )
            kinds["max-score-picker"] = "picker"
            pickers = [plugins[-1]]
        specs[i] = ProfileSpec(spec.name, (*spec.plugins, ProfilePluginRef(pickers[0].name)))
    for spec in specs:
        n_pickers = sum(1 for r in spec.plugins if kinds.get(r.plugin_ref) == "picker")
        if n_pickers > 1:
            raise ConfigError(f"{loc}: profile {spec.name!r} has {n_pickers} pickers; one allowed")
    return tuple(plugins), tuple(specs)
