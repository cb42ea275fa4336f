"""The scheduling half of upstream's `EndpointPickerConfig`, after upstream's defaulting: which
plugins to build and how the profiles use them. Read from YAML by `sluice.config`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """One plugin as configured; `parameters` raw, as written (its class's `Parameters` model
    reads them: `registry.create`)."""

    name: str
    type: str
    parameters: Mapping[str, Any]
    where: str  # "plugins[2]"


@dataclass(frozen=True, slots=True)
class ProfilePluginRef:
    plugin_ref: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    name: str
    plugins: tuple[ProfilePluginRef, ...]


@dataclass(frozen=True, slots=True)
class EndpointPickerConfig:
    """The scheduling part of Sluice's YAML, after upstream's defaulting."""

    plugins: tuple[PluginSpec, ...]
    profiles: tuple[ProfileSpec, ...]
    feature_gates: frozenset[str] = frozenset()
    data_raw: Mapping[str, Any] | None = None
    source: str = "<config>"

    def plugin(self, name: str) -> PluginSpec:
        return next(p for p in self.plugins if p.name == name)
