"""The one YAML: upstream's EndpointPickerConfig plus Sluice's sections, with mistakes that name
the file and line."""

from __future__ import annotations

import pytest

from sluice.config import SluiceConfigError, load_sluice_config


def test_no_config_is_sluices_default() -> None:
    config = load_sluice_config(None)
    assert config.room.queue_depth == 5
    assert {p.type for p in config.picker.plugins} >= {"prefix-cache-scorer", "max-score-picker"}


def test_a_config_with_only_flow_control_keeps_the_default_scheduling() -> None:
    config = load_sluice_config("flowControl:\n  maxRequests: 10\n")
    assert config.flow.max_requests == 10
    assert "prefix-cache-scorer" in {p.type for p in config.picker.plugins}


def test_sluices_room_fields_live_in_the_saturation_detector() -> None:
    config = load_sluice_config(
        "saturationDetector:\n  maxInFlightPerEndpoint: 16\n"
        "  maxInFlightPerEndpointBelowTopPriority: 12\n"
        "  maxPendingPrefillTokensPerEndpoint: 4096\n"
        "  backgroundHeadroomEndpoints: 2\n"
    )
    assert config.room.max_in_flight_requests == 16
    assert config.room.lower_priority_max_in_flight == 12
    assert config.room.max_pending_prefill_tokens == 4096
    assert config.room.background_headroom_endpoints == 2


def test_sluices_room_defaults_apply_unless_turned_off_with_zero() -> None:
    default = load_sluice_config("saturationDetector: {queueDepthThreshold: 5}\n").room
    assert default.max_in_flight_requests is None
    assert default.lower_priority_max_in_flight is None  # off unless set (docs/room.md)
    assert default.max_pending_prefill_tokens is not None
    assert default.background_headroom_endpoints == 1
    off = load_sluice_config(
        "saturationDetector:\n"
        "  maxInFlightPerEndpointBelowTopPriority: 0\n"
        "  maxPendingPrefillTokensPerEndpoint: 0\n"
        "  backgroundHeadroomEndpoints: 0\n"
    ).room
    assert off.lower_priority_max_in_flight is None
    assert off.max_pending_prefill_tokens is None
    assert off.background_headroom_endpoints == 0


def test_how_close_to_its_end_a_prefill_stops_holding_is_tunable_and_zero_turns_it_off() -> None:
    default = load_sluice_config(None).room
    assert (default.prefill_ending_s, default.background_ending_s) == (0.05, 0.2)
    room = load_sluice_config(
        "saturationDetector:\n  pendingPrefillEnding: 100ms\n  backgroundHeadroomEnding: 0\n"
    ).room
    assert (room.prefill_ending_s, room.background_ending_s) == (0.1, 0.0)


def test_the_prefill_estimate_and_reserve_holds_are_tunable() -> None:
    room = load_sluice_config(
        "saturationDetector:\n"
        "  prefillTokensPerSecond: 200\n"  # a CPU engine
        "  prefillOverhead: 10ms\n"
        "  maxPrefillHold: 2m\n"
        "  reserveHoldGaps: 4\n"
        "  reserveHoldMin: 500ms\n"
        "  reserveHoldMax: 10s\n"
    ).room
    assert (room.prefill_tokens_per_s, room.prefill_overhead_s, room.max_prefill_hold_s) == (
        200.0,
        0.01,
        120.0,
    )
    assert (room.reserve_hold_gaps, room.reserve_hold_min_s, room.reserve_hold_max_s) == (
        4.0,
        0.5,
        10.0,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "saturationDetector:\n  prefillTokensPerSecond: 0\n",
            "config.yaml:2: saturationDetector.prefillTokensPerSecond: expected a number > 0",
        ),
        (
            "saturationDetector:\n  maxPrefillHold: 0s\n",
            "config.yaml:2: saturationDetector.maxPrefillHold: expected a duration > 0",
        ),
        (
            "saturationDetector:\n  reserveHoldMin: 5s\n  reserveHoldMax: 1s\n",
            "config.yaml:3: saturationDetector.reserveHoldMax: must be at least reserveHoldMin",
        ),
        (
            "saturationDetector:\n  maxInFlightPerEndpoint: 8\n"
            "  maxInFlightPerEndpointBelowTopPriority: 9\n",
            "config.yaml:3: saturationDetector.maxInFlightPerEndpointBelowTopPriority",
        ),
        ("saturationDetector:\n  maxInFlightPerEndpoint: -1\n", "expected an integer >= 0"),
        (
            "saturationDetector:\n  backgroundHeadroomEndpoints: two\n",
            "config.yaml:2: saturationDetector.backgroundHeadroomEndpoints",
        ),
        ("flowControl:\n  maxRequest: 10\n", "config.yaml:2: flowControl"),
        ("flowControl:\n  priorityBands:\n  - {priority: 1, maxBytez: 3}\n", "config.yaml:3:"),
    ],
)
def test_mistakes_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(SluiceConfigError, match=message):
        load_sluice_config(text, "config.yaml")


def test_a_cap_for_all_bands_sets_no_lower_band_cap_of_its_own() -> None:
    room = load_sluice_config("saturationDetector: {maxInFlightPerEndpoint: 2}\n").room
    assert room.max_in_flight_requests == 2
    assert room.lower_priority_max_in_flight is None  # the all-bands cap binds every band
