"""The one YAML a user tunes: upstream's `EndpointPickerConfig` plus Sluice's `flowControl:`.

The scheduling package owns the EndpointPickerConfig half and the flow-control package owns the
`flowControl:` block; this module reads the file once, hands each its part, and makes every
mistake name the file and line (`config.yaml:14: flowControl.priorityBands[0].maxBytes: …`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from sluice.flowcontrol.config import FlowControlConfig, FlowControlConfigError, parse_flow_control
from sluice.room import RoomSettings
from sluice.scheduling.config import EndpointPickerConfig, load_config
from sluice.scheduling.defaults import DEFAULT_CONFIG_YAML
from sluice.scheduling.params import ConfigError
from sluice.sources.manifests import line_of


class SluiceConfigError(ValueError):
    """A configuration mistake; the message names the file, line, field and fix."""


@dataclass(frozen=True)
class SluiceConfig:
    picker: EndpointPickerConfig
    flow: FlowControlConfig
    room: RoomSettings
    source: str


def load_sluice_config(text: str | None = None, source: str = "<config>") -> SluiceConfig:
    """Parse a config; None (no --config-file/--config-text) gives Sluice's default."""
    if text is None:
        text, source = DEFAULT_CONFIG_YAML, "<sluice default config>"
    else:
        text = _with_default_scheduling(text)
    try:
        picker = load_config(text, source)
    except ConfigError as exc:
        raise SluiceConfigError(str(exc)) from None
    plugin_types = {spec.name: spec.type for spec in picker.plugins}
    try:
        flow = parse_flow_control(picker.flow_control_raw, plugin_types=plugin_types)
    except FlowControlConfigError as exc:
        line = _line_in(text, exc.path)
        raise SluiceConfigError(f"{source}:{line}: {exc}") from None
    detector = picker.saturation_detector
    room = RoomSettings(
        queue_depth=detector.queue_depth_threshold,
        kv_cache_util=detector.kv_cache_util_threshold,
        metrics_staleness_s=detector.metrics_staleness_threshold_s,
        max_in_flight_requests=detector.max_in_flight_per_endpoint,
        lower_priority_max_in_flight=detector.max_in_flight_per_endpoint_below_top_priority,
        max_pending_prefill_tokens=detector.max_pending_prefill_tokens_per_endpoint,
        background_headroom_endpoints=detector.background_headroom_endpoints,
        prefill_tokens_per_s=detector.prefill_tokens_per_s,
        prefill_overhead_s=detector.prefill_overhead_s,
        max_prefill_hold_s=detector.max_prefill_hold_s,
        reserve_hold_gaps=detector.reserve_hold_gaps,
        reserve_hold_min_s=detector.reserve_hold_min_s,
        reserve_hold_max_s=detector.reserve_hold_max_s,
    )
    return SluiceConfig(picker=picker, flow=flow, room=room, source=source)


def _with_default_scheduling(text: str) -> str:
    """A config that says nothing about scheduling (no `plugins`, no `schedulingProfiles`, e.g.
    only `flowControl:`) gets Sluice's default profile. Upstream's defaulting would leave such a
    config with no scorers at all, i.e. random placement — never what someone tuning flow
    control meant. The default's sections are appended, so the user's line numbers hold."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # the loader reports it with its line
    if not isinstance(doc, dict) or "plugins" in doc or "schedulingProfiles" in doc:
        return text
    default = yaml.safe_load(DEFAULT_CONFIG_YAML)
    sections = {k: default[k] for k in ("plugins", "schedulingProfiles")}
    return text.rstrip("\n") + "\n" + yaml.safe_dump(sections, sort_keys=False)


def load_sluice_config_file(path: str | Path) -> SluiceConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SluiceConfigError(
            f"--config-file {path}: cannot read it ({exc.strerror}); pass an existing file"
        ) from None
    return load_sluice_config(text, str(file))


def _line_in(text: str, field_path: str) -> int:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 1
    return line_of(root, field_path) if root is not None else 1
