"""The `flowControl:` config block: a plain dict in, a typed, validated config out.

Field names follow upstream's later (v1.5) `flowControl` block where it has them (`maxBytes`,
`maxRequests`, `defaultRequestTTL`, `defaultPriorityBand`, `priorityBands[]`); the rest are
Sluice's own. Parsing is strict: an unknown key is an error that names its path and the fix.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sluice.flowcontrol.fairness import GLOBAL_STRICT, ROUND_ROBIN, TOKEN_FAIR, TokenCost
from sluice.flowcontrol.ordering import EDF, FCFS, SLO_DEADLINE
from sluice.util import durations

QUEUE = "queue"
LEGACY = "legacy"

# Upstream's per-band default (1 GB); 0 means unlimited everywhere.
UPSTREAM_BAND_MAX_BYTES = 1_000_000_000

FAIRNESS_NAMES = {
    TOKEN_FAIR: TOKEN_FAIR,
    "token-fair-fairness-policy": TOKEN_FAIR,
    "vtc": TOKEN_FAIR,
    ROUND_ROBIN: ROUND_ROBIN,
    "round-robin-fairness-policy": ROUND_ROBIN,
    GLOBAL_STRICT: GLOBAL_STRICT,
    "global-strict-fairness-policy": GLOBAL_STRICT,
}
ORDERING_NAMES = {
    FCFS: FCFS,
    "fcfs-ordering-policy": FCFS,
    EDF: EDF,
    "edf-ordering-policy": EDF,
    SLO_DEADLINE: SLO_DEADLINE,
    "slo-deadline-ordering-policy": SLO_DEADLINE,
}

# Upstream's `noEndpointRequestTTL` when neither it nor `defaultRequestTTL` is set.
UPSTREAM_NO_ENDPOINT_REQUEST_TTL_S = 60.0


class FlowControlConfigError(ValueError):
    """A config mistake, naming the key path (e.g. `flowControl.priorityBands[1].maxBytes`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True, slots=True)
class BandConfig:
    priority: int = 0
    max_bytes: int = UPSTREAM_BAND_MAX_BYTES
    max_requests: int = 0
    fairness: str = TOKEN_FAIR
    ordering: str = FCFS


@dataclass(frozen=True, slots=True)
class FlowControlConfig:
    mode: str = QUEUE
    max_bytes: int = 0
    max_requests: int = 0
    default_request_ttl_s: float | None = None  # None: no TTL, only client cancellation
    # Upstream's `noEndpointRequestTTL`: how long a request may wait while the pool has no
    # endpoints (scale from zero) before its 503. None follows `default_request_ttl_s`, else
    # 60 s, as upstream; 0: no limit. See `no_endpoint_ttl_s`.
    no_endpoint_request_ttl_s: float | None = None
    # Upstream's `enableEviction`: a higher band blocked on a full pool may end in-flight
    # requests of negative bands that have no first token yet (flowcontrol/eviction.py).
    enable_eviction: bool = False
    default_band: BandConfig = field(default_factory=BandConfig)
    bands: tuple[BandConfig, ...] = ()
    per_flow_max_requests: int = 0
    per_flow_max_bytes: int = 0
    token_cost: TokenCost = field(default_factory=TokenCost)
    fairness_weights: Mapping[str, float] = field(default_factory=dict)
    engine_priority: bool = False
    # The window over which a band's heavy hitter is found (`Band.heavy_hitter`); its requests
    # say so when they ask for room (the room may keep a reserve from them). 0 turns it off.
    fair_share_window_s: float = 30.0

    def band(self, priority: int) -> BandConfig:
        """The configured band, or one made from the default template (as upstream)."""
        for band in self.bands:
            if band.priority == priority:
                return band
        return replace(self.default_band, priority=priority)

    @property
    def no_endpoint_ttl_s(self) -> float | None:
        """The wait allowed while the pool has no endpoints (None: no limit)."""
        ttl = self.no_endpoint_request_ttl_s
        if ttl is None:
            ttl = self.default_request_ttl_s or UPSTREAM_NO_ENDPOINT_REQUEST_TTL_S
        return ttl or None

    def weight(self, fairness_id: str) -> float:
        return self.fairness_weights.get(fairness_id, 1.0)


# -- scalar parsers -------------------------------------------------------------------------

_QUANTITY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:[eE](\d+))?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_QUANTITY_UNITS = {
    None: 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def parse_duration(value: object, path: str) -> float:
    """Seconds from a number (seconds) or a Go-style duration: "30s", "500ms", "1m30s"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FlowControlConfigError(path, f"expected a duration like '30s', got {value!r}")
    try:
        seconds = float(value) if not isinstance(value, str) else durations.parse_duration(value)
    except ValueError:
        raise FlowControlConfigError(
            path, f"cannot read duration {value!r}; write e.g. '30s', '500ms' or '1m30s'"
        ) from None
    if seconds < 0 or not math.isfinite(seconds):
        raise FlowControlConfigError(path, f"duration must be >= 0, got {value!r}")
    return seconds


def parse_quantity(value: object, path: str) -> int:
    """A non-negative integer from an int or a Kubernetes quantity ("1Gi", "500M", "1e6")."""
    if isinstance(value, bool):
        raise FlowControlConfigError(path, f"expected a count or quantity, got {value!r}")
    if isinstance(value, int):
        number = float(value)
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        match = _QUANTITY.match(value.strip())
        if not match:
            raise FlowControlConfigError(
                path, f"cannot read quantity {value!r}; write an integer or e.g. '500M', '1Gi'"
            )
        digits, exponent, suffix = match.groups()
        number = float(digits) * (10 ** int(exponent) if exponent else 1)
        number *= _QUANTITY_UNITS[suffix]
    else:
        raise FlowControlConfigError(path, f"expected a count or quantity, got {value!r}")
    if number < 0 or not math.isfinite(number) or number != int(number):
        raise FlowControlConfigError(path, f"must be a whole number >= 0, got {value!r}")
    return int(number)


def _expect(value: object, kind: type | tuple[type, ...], path: str, what: str) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise FlowControlConfigError(path, f"expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise FlowControlConfigError(path, f"expected {what}, got {value!r}")
    return value


def _check_keys(block: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in block:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        fix = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
        raise FlowControlConfigError(f"{path}.{key}", f"unknown field; {fix}")


def _policy(ref: object, names: Mapping[str, str], plugins: Mapping[str, str], path: str) -> str:
    name = _expect(ref, str, path, "a policy name")
    name = plugins.get(name, name)  # a named plugin instance resolves to its type
    if name not in names:
        raise FlowControlConfigError(
            path, f"unknown policy {ref!r}; use one of: {', '.join(sorted(names))}"
        )
    return names[name]


# -- the block ------------------------------------------------------------------------------

_BAND_KEYS = ("priority", "maxBytes", "maxRequests", "fairnessPolicyRef", "orderingPolicyRef")
_TOP_KEYS = (
    "mode",
    "maxBytes",
    "maxRequests",
    "defaultRequestTTL",
    "defaultPriorityBand",
    "priorityBands",
    "perFlowMaxRequests",
    "perFlowMaxBytes",
    "tokenWeights",
    "defaultOutputTokens",
    "fairnessWeights",
    "enginePriority",
    "fairShareWindow",
    "usageLimitPolicyPluginRef",  # upstream's; accepted and ignored (Sluice has no usage limits)
)


def _parse_band(
    raw: object, base: BandConfig, plugins: Mapping[str, str], path: str, *, template: bool
) -> BandConfig:
    block: Mapping[str, Any] = _expect(raw, Mapping, path, "a mapping")
    _check_keys(block, _BAND_KEYS[1:] if template else _BAND_KEYS, path)
    band = base
    if not template:
        if "priority" not in block:
            raise FlowControlConfigError(f"{path}.priority", "required; add e.g. 'priority: 0'")
        band = replace(band, priority=_expect(block["priority"], int, f"{path}.priority", "int"))
    if "maxBytes" in block:
        band = replace(band, max_bytes=parse_quantity(block["maxBytes"], f"{path}.maxBytes"))
    if "maxRequests" in block:
        max_requests = parse_quantity(block["maxRequests"], f"{path}.maxRequests")
        band = replace(band, max_requests=max_requests)
    if "fairnessPolicyRef" in block:
        ref = f"{path}.fairnessPolicyRef"
        band = replace(
            band, fairness=_policy(block["fairnessPolicyRef"], FAIRNESS_NAMES, plugins, ref)
        )
    if "orderingPolicyRef" in block:
        ref = f"{path}.orderingPolicyRef"
        band = replace(
            band, ordering=_policy(block["orderingPolicyRef"], ORDERING_NAMES, plugins, ref)
        )
    return band


def parse_flow_control(
    block: Mapping[str, Any] | None,
    *,
    plugin_types: Mapping[str, str] | None = None,
    path: str = "flowControl",
) -> FlowControlConfig:
    """Parse the `flowControl:` block. `plugin_types` maps plugin names from the config's
    `plugins:` list to their types, so `fairnessPolicyRef: my-rr` can name a plugin instance."""
    if block is None:
        return FlowControlConfig()
    block = _expect(block, Mapping, path, "a mapping")
    plugins = dict(plugin_types or {})
    _check_keys(block, _TOP_KEYS, path)
    config = FlowControlConfig()

    if "mode" in block:
        mode = _expect(block["mode"], str, f"{path}.mode", "'queue' or 'legacy'")
        if mode not in (QUEUE, LEGACY):
            raise FlowControlConfigError(f"{path}.mode", f"got {mode!r}; use 'queue' or 'legacy'")
        config = replace(config, mode=mode)
    if "maxBytes" in block:
        config = replace(config, max_bytes=parse_quantity(block["maxBytes"], f"{path}.maxBytes"))
    if "maxRequests" in block:
        config = replace(
            config, max_requests=parse_quantity(block["maxRequests"], f"{path}.maxRequests")
        )
    if "defaultRequestTTL" in block:
        ttl = parse_duration(block["defaultRequestTTL"], f"{path}.defaultRequestTTL")
        config = replace(config, default_request_ttl_s=ttl or None)
    if "defaultPriorityBand" in block:
        template = _parse_band(
            block["defaultPriorityBand"],
            BandConfig(),
            plugins,
            f"{path}.defaultPriorityBand",
            template=True,
        )
        config = replace(config, default_band=template)
    if "priorityBands" in block:
        items = _expect(block["priorityBands"], list, f"{path}.priorityBands", "a list of bands")
        bands: list[BandConfig] = []
        for index, item in enumerate(items):
            item_path = f"{path}.priorityBands[{index}]"
            band = _parse_band(item, config.default_band, plugins, item_path, template=False)
            if any(b.priority == band.priority for b in bands):
                raise FlowControlConfigError(
                    f"{item_path}.priority", f"priority {band.priority} is configured twice"
                )
            bands.append(band)
        config = replace(config, bands=tuple(bands))
    if "perFlowMaxRequests" in block:
        value = parse_quantity(block["perFlowMaxRequests"], f"{path}.perFlowMaxRequests")
        config = replace(config, per_flow_max_requests=value)
    if "perFlowMaxBytes" in block:
        value = parse_quantity(block["perFlowMaxBytes"], f"{path}.perFlowMaxBytes")
        config = replace(config, per_flow_max_bytes=value)
    cost = config.token_cost
    if "tokenWeights" in block:
        weights_path = f"{path}.tokenWeights"
        weights = _expect(block["tokenWeights"], Mapping, weights_path, "{input, output}")
        _check_keys(weights, ("input", "output"), weights_path)

        def weight(key: str, current: float) -> float:
            if key not in weights:
                return current
            value = _expect(weights[key], (int, float), f"{weights_path}.{key}", "a number")
            if value < 0:
                raise FlowControlConfigError(f"{weights_path}.{key}", "must be >= 0")
            return float(value)

        cost = replace(
            cost,
            input_weight=weight("input", cost.input_weight),
            output_weight=weight("output", cost.output_weight),
        )
    if "defaultOutputTokens" in block:
        tokens = parse_quantity(block["defaultOutputTokens"], f"{path}.defaultOutputTokens")
        cost = replace(cost, default_output_tokens=tokens)
    config = replace(config, token_cost=cost)
    if "fairnessWeights" in block:
        weights_path = f"{path}.fairnessWeights"
        raw = _expect(block["fairnessWeights"], Mapping, weights_path, "a map of id: weight")
        parsed: dict[str, float] = {}
        for fairness_id, weight in raw.items():
            key_path = f"{weights_path}.{fairness_id}"
            value = _expect(weight, (int, float), key_path, "a positive number")
            if not value > 0:
                raise FlowControlConfigError(key_path, f"weight must be > 0, got {weight!r}")
            parsed[str(fairness_id)] = float(value)
        config = replace(config, fairness_weights=parsed)
    if "enginePriority" in block:
        enabled = _expect(block["enginePriority"], bool, f"{path}.enginePriority", "true/false")
        config = replace(config, engine_priority=enabled)
    if "fairShareWindow" in block:
        window = parse_duration(block["fairShareWindow"], f"{path}.fairShareWindow")
        config = replace(config, fair_share_window_s=window)
    return config
