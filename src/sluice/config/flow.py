"""`flowControl:` → `FlowControlConfig`.

Two sets of defaults: a file in the llm-d-router v0.9+ layout (`apiVersion: llm-d.ai/v1alpha1`)
gets upstream's (a 60 s `defaultRequestTTL`, bands of 5000 requests / 1 GB where 0 also means
that default, `global-strict` fairness), so it behaves as it did upstream; any other gets
Sluice's (no TTL, token-fair bands capped at 1 GB only), unchanged from before the v0.9 layout
was read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from sluice.api.problems import problems
from sluice.api.scalars import overlay
from sluice.config.models import BandTemplate, FlowControl
from sluice.flowcontrol.config import (
    FAIRNESS_NAMES,
    ORDERING_NAMES,
    UPSTREAM_BAND_MAX_BYTES,
    UPSTREAM_BAND_MAX_REQUESTS,
    UPSTREAM_DEFAULT_REQUEST_TTL_S,
    BandConfig,
    FlowControlConfig,
)
from sluice.flowcontrol.fairness import GLOBAL_STRICT
from sluice.util.located import ConfigError


def parse_flow_control(
    block: Mapping[str, Any] | None,
    *,
    plugin_types: Mapping[str, str] | None = None,
    path: str = "flowControl",
    upstream_defaults: bool = False,
) -> FlowControlConfig:
    """Parse a `flowControl:` block given as plain data (tests, benchmarks, code). `plugin_types`
    maps the config's plugin names to their types, so `fairnessPolicyRef: my-rr` may name a
    plugin instance. Raises `ConfigError` naming the field path."""
    if block is None:
        return build_flow_control(None, plugin_types or {}, path, upstream_defaults)
    try:
        model = FlowControl.model_validate(block)
    except ValidationError as exc:
        raise problems(FlowControl, exc, path)[0] from None
    return build_flow_control(model, plugin_types or {}, path, upstream_defaults)


def _policy(ref: str, names: Mapping[str, str], plugins: Mapping[str, str], path: str) -> str:
    name = plugins.get(ref, ref)  # a named plugin instance resolves to its type
    if name not in names:
        raise ConfigError(path, f"unknown policy {ref!r}; use one of: {', '.join(sorted(names))}")
    return names[name]


def _band(
    raw: BandTemplate, base: BandConfig, plugins: Mapping[str, str], path: str, upstream: bool
) -> BandConfig:
    band = base
    if raw.max_bytes is not None:
        band = replace(band, max_bytes=raw.max_bytes or (UPSTREAM_BAND_MAX_BYTES * upstream))
    if raw.max_requests is not None:
        band = replace(
            band, max_requests=raw.max_requests or (UPSTREAM_BAND_MAX_REQUESTS * upstream)
        )
    if raw.fairness_policy_ref is not None:
        fairness = _policy(
            raw.fairness_policy_ref, FAIRNESS_NAMES, plugins, f"{path}.fairnessPolicyRef"
        )
        band = replace(band, fairness=fairness)
    if raw.ordering_policy_ref is not None:
        ordering = _policy(
            raw.ordering_policy_ref, ORDERING_NAMES, plugins, f"{path}.orderingPolicyRef"
        )
        band = replace(band, ordering=ordering)
    return band


# flowControl field -> FlowControlConfig field, copied when written.
_FLOW_FIELDS = {
    "mode": "mode",
    "max_bytes": "max_bytes",
    "max_requests": "max_requests",
    "no_endpoint_request_ttl": "no_endpoint_request_ttl_s",
    "enable_eviction": "enable_eviction",
    "per_flow_max_requests": "per_flow_max_requests",
    "per_flow_max_bytes": "per_flow_max_bytes",
    "engine_priority": "engine_priority",
    "fair_share_window": "fair_share_window_s",
    "flow_gc_timeout": "idle_flow_timeout_s",
    "max_idle_flows": "max_idle_flows",
}


def build_flow_control(
    model: FlowControl | None,
    plugin_types: Mapping[str, str],
    path: str = "flowControl",
    upstream_defaults: bool = False,
) -> FlowControlConfig:
    base = BandConfig()
    config = FlowControlConfig()
    if upstream_defaults:
        base = replace(base, max_requests=UPSTREAM_BAND_MAX_REQUESTS, fairness=GLOBAL_STRICT)
        config = replace(config, default_request_ttl_s=UPSTREAM_DEFAULT_REQUEST_TTL_S)
    config = replace(config, default_band=base)
    if model is None:
        return config
    m, up = model, upstream_defaults
    config = overlay(config, m, _FLOW_FIELDS)
    if m.default_request_ttl is not None:
        config = replace(config, default_request_ttl_s=m.default_request_ttl or None)
    if m.default_priority_band is not None:
        where = f"{path}.defaultPriorityBand"
        config = replace(
            config, default_band=_band(m.default_priority_band, base, plugin_types, where, up)
        )
    if m.default_negative_priority_band is not None:
        where = f"{path}.defaultNegativePriorityBand"
        negative = _band(
            m.default_negative_priority_band, config.default_band, plugin_types, where, up
        )
        config = replace(config, default_negative_band=negative)
    bands: list[BandConfig] = []
    for index, raw in enumerate(m.priority_bands or ()):
        template = config.band(raw.priority)
        where = f"{path}.priorityBands[{index}]"
        bands.append(_band(raw, template, plugin_types, where, up))
    config = replace(config, bands=tuple(bands))
    cost = config.token_cost
    if m.token_weights is not None:
        weights = m.token_weights
        cost = replace(
            cost,
            input_weight=cost.input_weight if weights.input is None else weights.input,
            output_weight=cost.output_weight if weights.output is None else weights.output,
        )
    if m.default_output_tokens is not None:
        cost = replace(cost, default_output_tokens=m.default_output_tokens)
    config = replace(config, token_cost=cost)
    if m.fairness_weights is not None:
        config = replace(config, fairness_weights=dict(m.fairness_weights))
    return config


__all__ = ["build_flow_control", "parse_flow_control"]
