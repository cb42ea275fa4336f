"""The room: every rule that decides whether an endpoint may take one more request, and which
request — upstream's saturation thresholds, Sluice's in-flight caps, when a pending prefill is
over (first byte, the engine's own counters, or an estimate of its prefill time), when a
detached request is over (the engine's count, or an estimate of its end), the reserves
kept for a higher band or for the rest of a band, the subset rule and placement steering.
Sans-I/O: `now` is passed in. May import `sluice.datalayer` (types) and `sluice.requests` (types).
See docs/room.md."""

from sluice.room.ceiling import ceilings, pool_saturation
from sluice.room.core import Hold, Room
from sluice.room.ends import EndEstimator
from sluice.room.placement import in_subset, placeable, steer_prefills
from sluice.room.prefill import PrefillEstimator
from sluice.room.rules import (
    endpoints_with_room,
    has_room,
    has_room_for_background,
    hold_rule,
    is_saturated,
    room_left,
    rule_inputs,
)
from sluice.room.settings import DEFAULT_ROOM, RANK, STATIC, VALUE, RoomSettings, UsageLimit

__all__ = [
    "DEFAULT_ROOM",
    "RANK",
    "STATIC",
    "VALUE",
    "EndEstimator",
    "Hold",
    "PrefillEstimator",
    "Room",
    "RoomSettings",
    "UsageLimit",
    "ceilings",
    "endpoints_with_room",
    "has_room",
    "has_room_for_background",
    "hold_rule",
    "in_subset",
    "is_saturated",
    "placeable",
    "pool_saturation",
    "room_left",
    "rule_inputs",
    "steer_prefills",
]
