"""The one configuration package: Sluice's YAML (upstream's `EndpointPickerConfig`, GIE v1.3 or
llm-d-router v0.9+ layout, plus Sluice's fields) read once, validated by strict pydantic models,
every mistake `file:line: field: fix` (`sluice.util.located.ConfigError`).

May import every core package (`api`, `scheduling`, `flowcontrol`, `room`, `util`); none of them
imports it."""

from sluice.api.scalars import duration as parse_duration
from sluice.api.scalars import quantity as parse_quantity
from sluice.config.flow import parse_flow_control
from sluice.config.load import (
    SluiceConfig,
    default_config,
    load_config,
    load_sluice_config,
    load_sluice_config_file,
)
from sluice.util.located import ConfigError

SluiceConfigError = ConfigError
FlowControlConfigError = ConfigError

__all__ = [
    "ConfigError",
    "FlowControlConfigError",
    "SluiceConfig",
    "SluiceConfigError",
    "default_config",
    "load_config",
    "load_sluice_config",
    "load_sluice_config_file",
    "parse_duration",
    "parse_flow_control",
    "parse_quantity",
]
