"""The one YAML a user tunes, read once: composed with line numbers, validated by the models in
`models`, built into the typed configs the packages use, every mistake located at
`file:line: field: fix`.

Both layouts are read: GIE v1.3's (`inference.networking.x-k8s.io/v1alpha1`, a top-level
`saturationDetector` with thresholds) and llm-d-router v0.9+'s (`llm-d.ai/v1alpha1`,
`flowControl.saturationDetector.pluginRef`, `requestHandler`, `dataLayer`, `gate=false`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sluice.api.problems import problems
from sluice.config.flow import build_flow_control
from sluice.config.models import EndpointPickerConfigFile, PluginEntry, SaturationDetector
from sluice.config.plugin_types import (
    DATA_TYPES,
    DETECTOR_TYPES,
    NON_SCHEDULING_TYPES,
    PARSER_TYPES,
    SLUICE_INSTEAD,
    USAGE_LIMIT_TYPES,
)
from sluice.config.room import build_room, detector_fields, usage_limit
from sluice.flowcontrol.config import FlowControlConfig
from sluice.room import RoomSettings, UsageLimit
from sluice.scheduling import registry as plugin_registry
from sluice.scheduling.config import EndpointPickerConfig, PluginSpec, ProfilePluginRef, ProfileSpec
from sluice.scheduling.defaults import DEFAULT_CONFIG_YAML
from sluice.util.located import ConfigError, line_of, syntax_error_line

GIE_API_VERSION = "inference.networking.x-k8s.io/v1alpha1"
LLMD_API_VERSION = "llm-d.ai/v1alpha1"
KIND = "EndpointPickerConfig"
# name → on unless the file says otherwise (upstream registers flowControl off by default; in
# Sluice flow control is always on, and the gate is accepted either way).
FEATURE_GATES = frozenset(
    {"dataLayer", "flowControl", "prepareDataPlugins", "haPopulateNonLeaderDatastore"}
)


@dataclass(frozen=True)
class SluiceConfig:
    picker: EndpointPickerConfig
    flow: FlowControlConfig
    room: RoomSettings
    source: str


@dataclass(frozen=True)
class _Document:
    """One YAML document, composed once: its node tree (for lines) and its value."""

    source: str
    root: yaml.Node | None
    value: Any

    @classmethod
    def parse(cls, text: str, source: str) -> _Document:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            value = loader.construct_document(root) if root is not None else None
        except yaml.YAMLError as exc:
            line, reason = syntax_error_line(exc)
            raise ConfigError("", f"invalid YAML: {reason}", f"{source}:{line}") from None
        finally:
            loader.dispose()
        return cls(source, root, value)

    def where(self, path: str) -> str:
        line = line_of(self.root, path) if self.root is not None else 1
        return f"{self.source}:{line}"

    def locate(self, error: ConfigError) -> ConfigError:
        return error if error.location else error.at(self.where(error.path))


def _validate(doc: _Document) -> EndpointPickerConfigFile:
    if doc.value is None:
        raise ConfigError("", "empty config", doc.source)
    try:
        return EndpointPickerConfigFile.model_validate(doc.value)
    except ValidationError as exc:
        found = [doc.locate(p) for p in problems(EndpointPickerConfigFile, exc)]
        raise min(found, key=lambda p: int(str(p.location).rsplit(":", 1)[1])) from None


def _header(model: EndpointPickerConfigFile) -> bool:
    """True for the llm-d-router layout (upstream's defaults apply)."""
    if model.api_version is not None and model.api_version not in (
        GIE_API_VERSION,
        LLMD_API_VERSION,
    ):
        raise ConfigError(
            "apiVersion",
            f"expected {LLMD_API_VERSION!r} or {GIE_API_VERSION!r}, got {model.api_version!r}",
        )
    if model.kind is not None and model.kind != KIND:
        raise ConfigError("kind", f"expected {KIND!r}, got {model.kind!r}")
    return model.api_version == LLMD_API_VERSION


def _feature_gates(model: EndpointPickerConfigFile) -> frozenset[str]:
    gates: set[str] = set()
    for i, entry in enumerate(model.feature_gates or ()):
        gate, _, setting = entry.partition("=")
        if gate not in FEATURE_GATES:
            known = ", ".join(sorted(FEATURE_GATES))
            raise ConfigError(
                f"featureGates[{i}]", f"unknown feature gate {gate!r}; known: {known}"
            )
        if setting == "false":
            gates.discard(gate)
        else:
            gates.add(gate)
    return frozenset(gates)


def _kind_of(type_name: str) -> str | None:
    if type_name in NON_SCHEDULING_TYPES:
        return "non-scheduling"
    return plugin_registry.plugin_kind(type_name)


def _check_type(entry: PluginEntry, where: str) -> None:
    if _kind_of(entry.type) is not None:
        return
    if entry.type in SLUICE_INSTEAD:
        raise ConfigError(
            f"{where}.type",
            f"upstream plugin {entry.type!r} is not implemented by Sluice; instead use "
            + SLUICE_INSTEAD[entry.type],
        )
    known = ", ".join(sorted({*plugin_registry.known_types(), *NON_SCHEDULING_TYPES}))
    raise ConfigError(f"{where}.type", f"unknown plugin type {entry.type!r}; known types: {known}")


def _plugins(
    doc: _Document, model: EndpointPickerConfigFile
) -> tuple[list[PluginSpec], dict[str, str]]:
    """Scheduling plugin specs, and every plugin's name → type (flow-control plugins too)."""
    specs: list[PluginSpec] = []
    types: dict[str, str] = {}
    seen: dict[str, str] = {}
    for i, entry in enumerate(model.plugins or ()):
        where = f"plugins[{i}]"
        _check_type(entry, where)
        name = entry.name or entry.type
        if name in seen:
            raise ConfigError(
                f"{where}.name", f"duplicate plugin name {name!r} (also {seen[name]})"
            )
        seen[name] = where
        types[name] = entry.type
        parameters = dict(entry.parameters or {})
        if entry.type in NON_SCHEDULING_TYPES:
            _check_non_scheduling(entry.type, parameters, f"{where}.parameters")
            continue
        specs.append(PluginSpec(name, entry.type, parameters, where))
    return specs, types


def _check_non_scheduling(type_name: str, parameters: Mapping[str, Any], where: str) -> None:
    if type_name in DETECTOR_TYPES:
        detector_fields(type_name, parameters, where)
        return
    if type_name in USAGE_LIMIT_TYPES:
        usage_limit(type_name, parameters, where)
        return
    if parameters:
        first = next(iter(parameters))
        raise ConfigError(
            f"{where}.{first}",
            f"unknown parameter {first!r}; this plugin takes no parameters in Sluice; remove them",
        )


_DEFAULT_USAGE_LIMIT = "static-usage-limit-policy"  # upstream's DefaultUsageLimitPolicyRef


def _usage_limit(
    model: EndpointPickerConfigFile,
    doc_plugins: Mapping[str, PluginEntry],
    detector: SaturationDetector | None,
    bands: tuple[int, ...],
) -> UsageLimit | None:
    """The usage-limit policy in force, or None when it holds nothing back. As upstream
    (config/loader/flowcontrol.go), `flowControl.usageLimitPolicyPluginRef` names it, by
    default the plugin named `static-usage-limit-policy`; none declared: a threshold of 1.0."""
    fc = model.flow_control
    ref = fc.usage_limit_policy_plugin_ref if fc is not None else None
    ref = ref or _DEFAULT_USAGE_LIMIT
    where = "flowControl.usageLimitPolicyPluginRef"
    entry = doc_plugins.get(ref)
    if entry is None and ref == _DEFAULT_USAGE_LIMIT:
        return None
    if entry is not None:
        where = f"plugins[{list(doc_plugins).index(ref)}].parameters"
    limit = usage_limit(
        entry.type if entry else ref, (entry.parameters or {}) if entry else {}, where
    )
    if limit.min_ceiling >= 1.0:
        return None
    ref = detector.plugin_ref if detector is not None else None
    if ref is not None and (doc_plugins[ref].type if ref in doc_plugins else ref) != (
        "utilization-detector"
    ):
        raise ConfigError(
            "flowControl.usageLimitPolicyPluginRef",
            "a ceiling below 1.0 gates on upstream's utilization-detector saturation (queue depth "
            "and KV cache); Sluice does not compute the concurrency-detector's, use the "
            "utilization-detector",
        )
    return replace(limit, configured_bands=bands)


def _profiles(
    model: EndpointPickerConfigFile, plugins: list[PluginSpec], types: Mapping[str, str]
) -> tuple[tuple[PluginSpec, ...], tuple[ProfileSpec, ...]]:
    """Upstream's defaults.go: default profile, single-profile-handler, max-score-picker."""
    kinds = {p.name: plugin_registry.plugin_kind(p.type) for p in plugins}
    specs: list[ProfileSpec] = []
    names: set[str] = set()
    for i, profile in enumerate(model.scheduling_profiles or ()):
        if profile.name in names:
            raise ConfigError(
                f"schedulingProfiles[{i}].name", f"duplicate profile name {profile.name!r}"
            )
        names.add(profile.name)
        refs: list[ProfilePluginRef] = []
        for j, ref in enumerate(profile.plugins or ()):
            where = f"schedulingProfiles[{i}].plugins[{j}].pluginRef"
            if ref.plugin_ref not in types:
                known = ", ".join(types) or "none"
                raise ConfigError(
                    where, f"unknown plugin {ref.plugin_ref!r}; defined plugins: {known}"
                )
            if kinds.get(ref.plugin_ref) not in ("filter", "scorer", "picker"):
                raise ConfigError(where, f"plugin {ref.plugin_ref!r} cannot be used in a profile")
            refs.append(ProfilePluginRef(ref.plugin_ref, 1.0 if ref.weight is None else ref.weight))
        specs.append(ProfileSpec(profile.name, tuple(refs)))
    if not specs:
        refs = [
            ProfilePluginRef(p.name)
            for p in plugins
            if kinds[p.name] in ("filter", "scorer", "picker")
        ]
        specs = [ProfileSpec("default", tuple(refs))]
    handlers = [p for p in plugins if kinds[p.name] == "profile-handler"]
    if len(handlers) > 1:
        raise ConfigError(
            "plugins", f"more than one profile handler: {', '.join(h.name for h in handlers)}"
        )
    if not handlers:
        if len(specs) > 1:
            raise ConfigError(
                "schedulingProfiles", f"{len(specs)} profiles need a profile handler plugin"
            )
        plugins.append(
            PluginSpec("single-profile-handler", "single-profile-handler", {}, "plugins[default]")
        )
    elif handlers[0].type == "single-profile-handler" and len(specs) > 1:
        raise ConfigError(
            "schedulingProfiles",
            f"single-profile-handler requires exactly one profile, got {len(specs)}",
        )
    pickers = [p for p in plugins if kinds.get(p.name) == "picker"]
    for i, spec in enumerate(specs):
        if any(kinds.get(r.plugin_ref) == "picker" for r in spec.plugins):
            continue
        if not pickers:
            plugins.append(
                PluginSpec("max-score-picker", "max-score-picker", {}, "plugins[default]")
            )
            kinds["max-score-picker"] = "picker"
            pickers = [plugins[-1]]
        specs[i] = ProfileSpec(spec.name, (*spec.plugins, ProfilePluginRef(pickers[0].name)))
    _data_keys(specs, {p.name: p.type for p in plugins})
    for i, spec in enumerate(specs):
        n_pickers = sum(1 for r in spec.plugins if kinds.get(r.plugin_ref) == "picker")
        if n_pickers > 1:
            raise ConfigError(
                f"schedulingProfiles[{i}]",
                f"profile {spec.name!r} has {n_pickers} pickers; one allowed",
            )
    return tuple(plugins), tuple(specs)


def _data_keys(profiles: list[ProfileSpec], types: Mapping[str, str]) -> None:
    """A plugin that reads a declared data key runs after the plugin that writes it."""
    for i, profile in enumerate(profiles):
        written: set[str] = set()
        later = {
            key: ref.plugin_ref
            for ref in profile.plugins
            for key in getattr(plugin_registry.plugin_class(types[ref.plugin_ref]), "produces", ())
        }
        for j, ref in enumerate(profile.plugins):
            cls = plugin_registry.plugin_class(types[ref.plugin_ref])
            for key in getattr(cls, "consumes", ()):
                if key in later and key not in written:
                    raise ConfigError(
                        f"schedulingProfiles[{i}].plugins[{j}].pluginRef",
                        f"{ref.plugin_ref!r} reads {key!r}, which {later[key]!r} writes later in "
                        f"the profile; list {later[key]!r} first",
                    )
            written.update(getattr(cls, "produces", ()))


def _refs(model: EndpointPickerConfigFile, types: Mapping[str, str]) -> None:
    """Every pluginRef outside the profiles names a declared plugin of the right family."""
    checks: list[tuple[str, str, frozenset[str]]] = []
    layer = model.data_layer
    if layer is not None:
        for i, source in enumerate(layer.sources or ()):
            checks.append((f"dataLayer.sources[{i}].pluginRef", source.plugin_ref, DATA_TYPES))
            for j, ex in enumerate(source.extractors or ()):
                where = f"dataLayer.sources[{i}].extractors[{j}].pluginRef"
                checks.append((where, ex.plugin_ref, DATA_TYPES))
        for key, ref in (("discovery", layer.discovery), ("peerDiscovery", layer.peer_discovery)):
            if ref is not None:
                checks.append((f"dataLayer.{key}.pluginRef", ref.plugin_ref, frozenset()))
        if layer.cross_replica_syncer_plugin_ref is not None:
            where = "dataLayer.crossReplicaSyncerPluginRef"
            checks.append((where, layer.cross_replica_syncer_plugin_ref, frozenset()))
    parsers = model.request_handler.parsers if model.request_handler is not None else None
    for i, parser in enumerate(parsers or ()):
        checks.append((f"requestHandler.parsers[{i}].pluginRef", parser.plugin_ref, PARSER_TYPES))
    if model.parser is not None and not parsers:  # upstream: the deprecated top-level form
        checks.append(("parser.pluginRef", model.parser.plugin_ref, PARSER_TYPES))
    fc = model.flow_control
    if fc is not None and fc.usage_limit_policy_plugin_ref is not None:
        limit = fc.usage_limit_policy_plugin_ref
        if limit in USAGE_LIMIT_TYPES and limit not in types:  # upstream's default instance name
            types = {**types, limit: limit}
        checks.append(("flowControl.usageLimitPolicyPluginRef", limit, USAGE_LIMIT_TYPES))
    for where, name, family in checks:
        kind = types.get(name)
        if kind is None:
            known = ", ".join(types) or "none"
            raise ConfigError(where, f"unknown plugin {name!r}; defined plugins: {known}")
        if kind not in family:
            offers = ", ".join(sorted(family)) or "none"
            raise ConfigError(
                where, f"plugin {name!r} (type {kind}) cannot serve here; Sluice offers: {offers}"
            )


def _detector(
    model: EndpointPickerConfigFile, doc_plugins: Mapping[str, PluginEntry]
) -> tuple[SaturationDetector | None, str]:
    """The detector in force, as one `SaturationDetector` (its plugin's parameters merged in)."""
    fc = model.flow_control
    detector, where = model.saturation_detector, "saturationDetector"
    if fc is not None and fc.saturation_detector is not None:  # upstream: the new field wins
        detector, where = fc.saturation_detector, "flowControl.saturationDetector"
    if detector is None or detector.plugin_ref is None:
        return detector, where
    ref = detector.plugin_ref
    entry = doc_plugins.get(ref)
    type_name = entry.type if entry else ref
    if type_name not in DETECTOR_TYPES:
        raise ConfigError(
            f"{where}.pluginRef",
            f"{ref!r} is not a saturation detector; Sluice offers "
            + " and ".join(sorted(DETECTOR_TYPES)),
        )
    index = list(doc_plugins).index(ref) if entry else 0
    fields = detector_fields(
        type_name, (entry.parameters or {}) if entry else {}, f"plugins[{index}].parameters"
    )
    inline = detector.model_dump(by_alias=True, exclude_none=True)
    return SaturationDetector.model_validate({**fields, **inline}), where


def _build(doc: _Document) -> SluiceConfig:
    model = _validate(doc)
    upstream = _header(model)
    if model.plugins is None and model.scheduling_profiles is None:
        # A config that says nothing about scheduling (e.g. only `flowControl:`) keeps Sluice's
        # default profile: upstream's defaulting would leave no scorers, i.e. random placement.
        default = EndpointPickerConfigFile.model_validate(yaml.safe_load(DEFAULT_CONFIG_YAML))
        model = model.model_copy(
            update={"plugins": default.plugins, "scheduling_profiles": default.scheduling_profiles}
        )
    gates = _feature_gates(model)
    if "dataLayer" in gates and model.data is None and model.data_layer is None:
        raise ConfigError(
            "featureGates", "the dataLayer feature gate needs a data: or dataLayer: section"
        )
    plugins, types = _plugins(doc, model)
    all_plugins, profiles = _profiles(model, plugins, types)
    _refs(model, types)
    by_name = {entry.name or entry.type: entry for entry in model.plugins or ()}
    detector, where = _detector(model, by_name)
    room = build_room(detector, where)
    flow = build_flow_control(model.flow_control, types, upstream_defaults=upstream)
    limit = _usage_limit(model, by_name, detector, tuple(b.priority for b in flow.bands))
    room = replace(room, usage_limit=limit)
    picker = EndpointPickerConfig(all_plugins, profiles, gates, model.data, doc.source)
    for spec in all_plugins:  # dry-build: parameter errors surface at load time
        plugin_registry.create(spec, plugin_registry.PluginContext())
    return SluiceConfig(picker=picker, flow=flow, room=room, source=doc.source)


def load_sluice_config(text: str | None = None, source: str = "<config>") -> SluiceConfig:
    """Parse a config; None (no --config-file/--config-text) gives Sluice's default."""
    if text is None:
        text, source = DEFAULT_CONFIG_YAML, "<sluice default config>"
    doc = _Document.parse(text, source)
    try:
        return _build(doc)
    except ConfigError as exc:
        raise doc.locate(exc) from None


def load_config(text: str, source: str = "<config>") -> EndpointPickerConfig:
    """The scheduling half of a config (benchmarks and tests that only schedule)."""
    return load_sluice_config(text, source).picker


def default_config() -> EndpointPickerConfig:
    return load_sluice_config(None).picker


def load_sluice_config_file(path: str | Path) -> SluiceConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            "", f"--config-file {path}: cannot read it ({exc.strerror}); pass an existing file"
        ) from None
    return load_sluice_config(text, str(file))
