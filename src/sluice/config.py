"""The one YAML a user tunes: upstream's `EndpointPickerConfig` plus Sluice's `flowControl:`.

The scheduling package owns the EndpointPickerConfig half and the flow-control package owns the
`flowControl:` block; this module reads the file once, hands each its part, and makes every
mistake name the file and line (`config.yaml:14: flowControl.priorityBands[0].maxBytes: …`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from sluice.datalayer.capacity import CapacityThresholds
from sluice.flowcontrol.config import FlowControlConfig, FlowControlConfigError, parse_flow_control
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
    room: CapacityThresholds
    source: str


def load_sluice_config(text: str | None = None, source: str = "<config>") -> SluiceConfig:
    """Parse a config; None (no --config-file/--config-text) gives Sluice's default."""
    if text is None:
        text, source = DEFAULT_CONFIG_YAML, "<sluice default config>"
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
    room = CapacityThresholds(
        queue_depth=detector.queue_depth_threshold,
        kv_cache_util=detector.kv_cache_util_threshold,
        metrics_staleness_s=detector.metrics_staleness_threshold_s,
    )
    return SluiceConfig(picker=picker, flow=flow, room=room, source=source)


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
