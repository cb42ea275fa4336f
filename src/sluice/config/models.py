"""The YAML's shape as strict pydantic models: upstream's `EndpointPickerConfig` in both layouts
(GIE v1.3 and llm-d-router v0.9+), Sluice's `flowControl` and `saturationDetector` fields.

Strict: an unknown field is an error (as upstream's loader since #1134), every scalar is checked
by one function in `scalars` (so "expected a number > 0, got 0" reads the same everywhere), and
a value left out is `None`, so the builders can tell "not written" from "written as default"."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from sluice.api import scalars
from sluice.api.rules import rule_error
from sluice.api.scalars import (
    Bool,
    Cap,
    Int,
    Name,
    NonNegative,
    Number,
    Positive,
    Quantity,
    Seconds,
    Strict,
    field_type,
)


def _kv_threshold(value: Any) -> float:
    number = scalars.finite(value, "a number in (0, 1)")
    if number >= 1:
        raise ValueError(f"expected a number in (0, 1), got {value!r}")
    return number


def _hold(value: Any) -> float:
    seconds = scalars.duration(value)
    if seconds == 0:
        raise ValueError(f"expected a duration > 0, got {seconds:g}s")
    return seconds


def _mode(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected 'queue' or 'legacy', got {value!r}")
    if value not in ("queue", "legacy"):
        raise ValueError(f"got {value!r}; use 'queue' or 'legacy'")
    return value


def _feature_gate(value: Any) -> str:
    gate = scalars.name(value)
    _, _, setting = gate.partition("=")
    if setting not in ("", "true", "false"):
        raise ValueError(f"{gate!r}: write 'name', 'name=true' or 'name=false'")
    return gate


KvThreshold = Annotated[float, field_type(_kv_threshold)]
Hold = Annotated[float, field_type(_hold)]
Mode = Annotated[str, field_type(_mode)]
FeatureGate = Annotated[str, field_type(_feature_gate)]


# -- scheduling ---------------------------------------------------------------------------------


class PluginEntry(Strict):
    name: Name | None = None
    type: Name
    parameters: dict[str, Any] | None = None


class ProfilePlugin(Strict):
    plugin_ref: Name
    weight: NonNegative | None = None


class SchedulingProfile(Strict):
    name: Name
    plugins: list[ProfilePlugin] | None = None


class SaturationDetector(Strict):
    """Upstream's `{pluginRef}` (v0.9+) or GIE v1.3's thresholds, plus Sluice's room fields."""

    plugin_ref: Name | None = None
    queue_depth_threshold: Int | None = None
    kv_cache_util_threshold: KvThreshold | None = None
    metrics_staleness_threshold: Seconds | None = None
    max_in_flight_per_endpoint: Cap | None = None
    max_in_flight_per_endpoint_below_top_priority: Cap | None = None
    max_pending_prefill_tokens_per_endpoint: Cap | None = None
    pending_prefill_ending: Seconds | None = None
    background_headroom_endpoints: Cap | None = None
    background_headroom_ending: Seconds | None = None
    cap_to_engine_slots: Bool | None = None
    prefill_tokens_per_second: Positive | None = None
    prefill_overhead: Seconds | None = None
    max_prefill_hold: Hold | None = None
    reserve_hold_gaps: Positive | None = None
    reserve_hold_min: Seconds | None = None
    reserve_hold_max: Seconds | None = None


class PluginRef(Strict):
    plugin_ref: Name


class DataLayerSource(Strict):
    plugin_ref: Name
    extractors: list[PluginRef] | None = None


class DataLayer(Strict):
    inject_defaults: Bool | None = None
    sources: list[DataLayerSource] | None = None
    discovery: PluginRef | None = None
    peer_discovery: PluginRef | None = None
    cross_replica_syncer_plugin_ref: Name | None = None
    cross_replica_sync_interval: Seconds | None = None


class RequestHandler(Strict):
    parsers: list[PluginRef] | None = None


# -- flow control -------------------------------------------------------------------------------


class TokenWeights(Strict):
    input: NonNegative | None = None
    output: NonNegative | None = None


class BandTemplate(Strict):
    max_bytes: Quantity | None = None
    max_requests: Quantity | None = None
    fairness_policy_ref: Name | None = None
    ordering_policy_ref: Name | None = None


class PriorityBand(BandTemplate):
    priority: Int


class FlowControl(Strict):
    mode: Mode | None = None
    max_bytes: Quantity | None = None
    max_requests: Quantity | None = None
    default_request_ttl: Seconds | None = Field(None, alias="defaultRequestTTL")
    no_endpoint_request_ttl: Seconds | None = Field(None, alias="noEndpointRequestTTL")
    default_priority_band: BandTemplate | None = None
    default_negative_priority_band: BandTemplate | None = None
    priority_bands: list[PriorityBand] | None = None
    usage_limit_policy_plugin_ref: Name | None = None
    saturation_detector: SaturationDetector | None = None
    enable_eviction: Bool | None = None
    # Sluice's own
    per_flow_max_requests: Quantity | None = None
    per_flow_max_bytes: Quantity | None = None
    token_weights: TokenWeights | None = None
    default_output_tokens: Quantity | None = None
    fairness_weights: dict[str, Positive] | None = None
    engine_priority: Bool | None = None
    fair_share_window: Seconds | None = None
    flow_gc_timeout: Seconds | None = Field(None, alias="flowGCTimeout")
    max_idle_flows: Quantity | None = None

    @model_validator(mode="after")
    def _priorities_once(self) -> FlowControl:
        seen: set[int] = set()
        for index, band in enumerate(self.priority_bands or ()):
            if band.priority in seen:
                raise rule_error(
                    f"priority {band.priority} is configured twice",
                    subpath=f".priorityBands[{index}].priority",
                )
            seen.add(band.priority)
        return self


# -- the file -----------------------------------------------------------------------------------


class EndpointPickerConfigFile(Strict):
    api_version: Name | None = None
    kind: Name | None = None
    feature_gates: list[FeatureGate] | None = None
    plugins: list[PluginEntry] | None = None
    scheduling_profiles: list[SchedulingProfile] | None = None
    saturation_detector: SaturationDetector | None = None
    data: Any = None  # GIE v1.3's data-layer block, passed through
    data_layer: DataLayer | None = None
    flow_control: FlowControl | None = None
    request_handler: RequestHandler | None = None
    parser: PluginRef | None = None  # deprecated upstream: requestHandler.parsers wins


__all__ = [
    "BandTemplate",
    "DataLayer",
    "EndpointPickerConfigFile",
    "FlowControl",
    "Number",
    "PluginEntry",
    "PriorityBand",
    "ProfilePlugin",
    "RequestHandler",
    "SaturationDetector",
    "SchedulingProfile",
    "Strict",
]
