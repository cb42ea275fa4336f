"""`saturationDetector` (and the detector plugin it may name) → `RoomSettings`.

The thresholds are declared once, in `RoomSettings`; only the two caps whose YAML default
differs from "off" are declared here (chosen with `sluice bench`; README's tables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from pydantic import ValidationError

from sluice.api.problems import problems
from sluice.api.scalars import Cap, Int, Name, NonNegative, Number, Seconds, Strict, overlay
from sluice.config.models import SaturationDetector
from sluice.room import DEFAULT_ROOM, RANK, STATIC, VALUE, RoomSettings, UsageLimit
from sluice.util.located import ConfigError

_M = TypeVar("_M", bound=Strict)

DEFAULT_MAX_PENDING_PREFILL_TOKENS = 1


class UtilizationDetectorParams(Strict):
    queue_depth_threshold: Int | None = None
    kv_cache_util_threshold: NonNegative | None = None
    metrics_staleness_threshold: Seconds | None = None
    headroom: NonNegative | None = None


class ConcurrencyDetectorParams(Strict):
    max_concurrency: Cap | None = None
    headroom: NonNegative | None = None
    concurrency_mode: Name | None = None
    max_token_concurrency: Cap | None = None
    in_flight_load_producer_name: Name | None = None


def detector_fields(type_name: str, parameters: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A detector plugin's parameters as `saturationDetector` fields (wire names)."""
    model: type[Strict] = (
        UtilizationDetectorParams
        if type_name == "utilization-detector"
        else ConcurrencyDetectorParams
    )
    params = _params(model, parameters, where)
    if getattr(params, "headroom", None):
        raise ConfigError(
            f"{where}.headroom",
            "Sluice's room has no fractional headroom; remove it (saturationDetector."
            "backgroundHeadroomEndpoints keeps whole endpoints free instead)",
        )
    if isinstance(params, UtilizationDetectorParams):
        fields = {
            "queueDepthThreshold": params.queue_depth_threshold,
            "kvCacheUtilThreshold": params.kv_cache_util_threshold,
            "metricsStalenessThreshold": params.metrics_staleness_threshold,
        }
        return {k: v for k, v in fields.items() if v is not None}
    assert isinstance(params, ConcurrencyDetectorParams)
    if params.concurrency_mode not in (None, "requests"):
        raise ConfigError(
            f"{where}.concurrencyMode",
            f"{params.concurrency_mode!r}: Sluice counts requests only; for tokens use "
            "saturationDetector.maxPendingPrefillTokensPerEndpoint",
        )
    if params.max_token_concurrency is not None:
        raise ConfigError(
            f"{where}.maxTokenConcurrency",
            "Sluice counts requests only; for tokens use "
            "saturationDetector.maxPendingPrefillTokensPerEndpoint",
        )
    if params.max_concurrency is None:
        return {}
    return {"maxInFlightPerEndpoint": params.max_concurrency}


class StaticUsageLimitParams(Strict):
    threshold: Number | None = None


class PriorityHoldbackParams(Strict):
    shape: Name | None = None
    domain: Name | None = None
    min_ceiling: Number | None = None
    max_ceiling: Number | None = None


def usage_limit(type_name: str, parameters: Mapping[str, Any], where: str) -> UsageLimit:
    """A usage-limit plugin's parameters, defaulted and checked as upstream documents them
    (llm-d-router v0.10 `flowcontrol/usagelimits`; docs/room.md, rule 7)."""
    if type_name == "static-usage-limit-policy":
        static = _params(StaticUsageLimitParams, parameters, where)
        threshold = 1.0 if static.threshold is None else static.threshold
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"{where}.threshold", f"must be in (0.0, 1.0], got {threshold:g}")
        return UsageLimit(STATIC, threshold, threshold)
    holdback = _params(PriorityHoldbackParams, parameters, where)
    if holdback.shape not in (None, "linear"):
        raise ConfigError(
            f"{where}.shape", f"unsupported shape {holdback.shape!r}, must be 'linear'"
        )
    domain = holdback.domain or RANK
    if domain not in (RANK, VALUE):
        raise ConfigError(
            f"{where}.domain", f"unsupported domain {domain!r}, must be one of: 'rank', 'value'"
        )
    if holdback.min_ceiling is None:
        raise ConfigError(
            f"{where}.minCeiling", "minCeiling is required (priority-holdback-policy)"
        )
    low = holdback.min_ceiling
    high = 1.0 if holdback.max_ceiling is None else holdback.max_ceiling
    if not 0.0 <= low < 1.0:
        raise ConfigError(f"{where}.minCeiling", f"must be in [0.0, 1.0), got {low:g}")
    if not 0.0 < high <= 1.0:
        raise ConfigError(f"{where}.maxCeiling", f"must be in (0.0, 1.0], got {high:g}")
    if low >= high:
        raise ConfigError(
            f"{where}.minCeiling",
            f"minCeiling ({low:g}) must be strictly less than maxCeiling ({high:g})",
        )
    return UsageLimit(domain, low, high)


def _params(model: type[_M], parameters: Mapping[str, Any], where: str) -> _M:
    try:
        return model.model_validate(dict(parameters))
    except ValidationError as exc:
        raise problems(model, exc, where, noun="parameter")[0] from None


# saturationDetector field -> RoomSettings field, copied when written.
_ROOM_FIELDS = {
    "background_headroom_endpoints": "background_headroom_endpoints",
    "background_headroom_ending": "background_ending_s",
    "pending_prefill_ending": "prefill_ending_s",
    "cap_to_engine_slots": "cap_to_engine_slots",
    "prefill_tokens_per_second": "prefill_tokens_per_s",
    "prefill_overhead": "prefill_overhead_s",
    "max_prefill_hold": "max_prefill_hold_s",
    "reserve_hold_gaps": "reserve_hold_gaps",
    "reserve_hold_min": "reserve_hold_min_s",
    "reserve_hold_max": "reserve_hold_max_s",
}


def build_room(
    detector: SaturationDetector | None, where: str = "saturationDetector"
) -> RoomSettings:
    d = detector or SaturationDetector()
    room = replace(DEFAULT_ROOM, max_pending_prefill_tokens=DEFAULT_MAX_PENDING_PREFILL_TOKENS)
    # Upstream: a threshold <= 0 means "use the default".
    if d.queue_depth_threshold is not None and d.queue_depth_threshold > 0:
        room = replace(room, queue_depth=d.queue_depth_threshold)
    if d.kv_cache_util_threshold is not None and d.kv_cache_util_threshold > 0:
        room = replace(room, kv_cache_util=d.kv_cache_util_threshold)
    if d.metrics_staleness_threshold:
        room = replace(room, metrics_staleness_s=d.metrics_staleness_threshold)
    # Sluice's caps: 0 turns one off.
    if d.max_in_flight_per_endpoint is not None:
        room = replace(room, max_in_flight_requests=d.max_in_flight_per_endpoint or None)
    # Off unless set: with the pending-prefill budget a cap on the lower bands' running count
    # only cost them throughput (docs/room.md, "2026-12-07, night").
    if d.max_in_flight_per_endpoint_below_top_priority is not None:
        cap = room.max_in_flight_requests
        lower = d.max_in_flight_per_endpoint_below_top_priority or None
        if cap is not None and lower is not None and lower > cap:
            raise ConfigError(
                f"{where}.maxInFlightPerEndpointBelowTopPriority",
                f"must be at most maxInFlightPerEndpoint ({cap}): lower bands never get more room",
            )
        room = replace(room, lower_priority_max_in_flight=lower)
    if d.max_pending_prefill_tokens_per_endpoint is not None:
        room = replace(
            room, max_pending_prefill_tokens=d.max_pending_prefill_tokens_per_endpoint or None
        )
    room = overlay(room, d, _ROOM_FIELDS)
    if room.reserve_hold_max_s < room.reserve_hold_min_s:
        raise ConfigError(
            f"{where}.reserveHoldMax"
            if d.reserve_hold_max is not None
            else f"{where}.reserveHoldMin",
            f"must be at least reserveHoldMin ({room.reserve_hold_min_s:g}s)",
        )
    return room
