"""The room's state between dispatches, and the questions the director asks it.

`Room` is persistent (one per pool): it learns each endpoint's prefill time and who is expected to
want room soon. Each question takes `now` and the endpoints' live states; nothing here reads a
clock, sleeps or opens a socket. See docs/room.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sluice.datalayer.registry import EndpointRegistry, EndpointState
from sluice.room.ceiling import ActiveBands, ceiling_for, pool_saturation
from sluice.room.demand import Demand, HoldTimes
from sluice.room.ends import EndEstimator
from sluice.room.peers import PeerDemand
from sluice.room.placement import placeable
from sluice.room.prefill import PrefillEstimator
from sluice.room.rules import (
    BACKGROUND_HEADROOM,
    USAGE_LIMIT,
    Ending,
    has_room,
    has_room_for_background,
    hold_rule,
    rule_inputs,
)
from sluice.room.settings import DEFAULT_ROOM, RoomSettings


@dataclass(frozen=True, slots=True)
class Hold:
    """Room refused to a band at `at`: per candidate endpoint, the rule that refused it."""

    at: float
    rules: dict[str, str]
    inputs: dict[str, dict[str, Any]]  # what the rules read of each endpoint (`rule_inputs`)
    lower_band: bool
    contended: bool
    background: bool = False

    @property
    def rule(self) -> str:
        """The rule that refused the most candidates (ties: first in candidate order)."""
        counts: dict[str, int] = {}
        for rule in self.rules.values():
            counts[rule] = counts.get(rule, 0) + 1
        return max(counts, key=lambda r: counts[r]) if counts else "no-candidates"


class Room:
    """Every rule of the room, in one place: the director asks, nothing else decides."""

    def __init__(self, settings: RoomSettings = DEFAULT_ROOM) -> None:
        self.settings = settings
        self.prefill = PrefillEstimator(settings)
        self.ends = EndEstimator(settings)
        self.demand = Demand(
            HoldTimes(
                settings.reserve_hold_gaps,
                settings.reserve_hold_min_s,
                settings.reserve_hold_max_s,
            )
        )
        self._scrapes_learned = -1
        self.peers: PeerDemand | None = None  # the pool's other replicas (room/peers.py)
        # Per band: the last time room was refused to it, and why (endpoint -> rule), for the
        # decision receipts; filled only while `explain_holds` is on.
        self.explain_holds = False
        self.holds: dict[int, Hold] = {}
        # Upstream's usage-limit gate (room/ceiling.py): the pool's saturation as of the last
        # `settle`, and the bands that count for the ceilings; None without a usage limit.
        limit = settings.usage_limit
        self.saturation: float | None = None
        self._bands = None if limit is None else ActiveBands(limit.configured_bands)

    # -- what happened -------------------------------------------------------------------------

    def arrived(self, priority: int, fairness_id: str, now: float) -> None:
        """A request was queued: its band and flow want room now, and for a while after."""
        self.demand.arrived(priority, fairness_id, now)
        if self._bands is not None:
            self._bands.touched(priority, now)

    def left(self, priority: int, fairness_id: str) -> None:
        """A queued request left the queue, dispatched or not."""
        self.demand.left(priority, fairness_id)

    def settle(self, registry: EndpointRegistry, now: float) -> None:
        """Bring the pending prefills and detached requests up to `now` (estimates that passed
        end) and learn from any scrape applied since the last call. Call before asking about
        room."""
        registry.settle_prefills(now)
        registry.settle_detached(now)
        if self._bands is not None:
            self.saturation = pool_saturation(registry.snapshot(), now, self.settings)
        if registry.scrapes != self._scrapes_learned:
            self._scrapes_learned = registry.scrapes
            self.prefill.observe_scrapes(registry.snapshot())
            if registry.detached_ends:
                self.ends.observe_detached_ends(registry.detached_ends)
                registry.detached_ends.clear()

    def first_byte(self, endpoint: str, uncached_tokens: int, seconds: float) -> None:
        """A streamed response started `seconds` after dispatch: a prefill-time sample."""
        self.prefill.observe_first_byte(endpoint, uncached_tokens, seconds)

    def completed(self, endpoint: str, output_tokens: int, decode_seconds: float) -> None:
        """An attached request produced `output_tokens` in `decode_seconds` after its prefill
        (its first byte, or the prefill estimate): a sample of the endpoint's decode rate."""
        self.ends.observe(endpoint, output_tokens, decode_seconds)

    def forget_except(self, endpoints: set[str]) -> None:
        self.prefill.forget_except(endpoints)
        self.ends.forget_except(endpoints)

    # -- questions -----------------------------------------------------------------------------

    def contended(self, now: float) -> bool:
        """Whether the pool's prefills compete: more than one flow (tenant and band) is expected
        soon, whose first tokens each other's prefills would delay. Only then is an endpoint
        held to one prefill at a time (`max_pending_prefill_tokens`); a pool serving a single
        tenant lets its engines batch the prefills themselves."""
        peers = self.peers
        return self.demand.shared(now) or (peers is not None and peers.any_waiting())

    def keeps_headroom_above(self, priority: int, now: float) -> bool:
        """Whether a request of band `priority` gets the tighter in-flight cap: a higher band is
        expected to want room soon, so the engines keep headroom it can use at once."""
        peers = self.peers
        return self.demand.expected_above(priority, now) or (
            peers is not None and peers.waiting_above(priority)
        )

    def ceiling(self, priority: int, now: float) -> float | None:
        """Band `priority`'s ceiling on pool saturation (room/ceiling.py); None: no usage limit."""
        limit, bands = self.settings.usage_limit, self._bands
        if limit is None or bands is None:
            return None
        return ceiling_for(limit, priority, bands.active(now, priority))

    def over_ceiling(self, priority: int, now: float) -> bool:
        """Whether the pool's saturation (as of the last `settle`) has reached band
        `priority`'s ceiling: upstream holds the band, and with it every band below."""
        saturation = self.saturation
        if saturation is None:
            return False
        ceiling = self.ceiling(priority, now)
        # A ceiling of 1.0 is upstream's "no gating": the room's own rules are Sluice's
        # counterpart of upstream's saturation >= 1.0.
        return ceiling is not None and ceiling < 1.0 and saturation >= ceiling

    def has_room(
        self,
        states: Sequence[EndpointState],
        priority: int,
        now: float,
        *,
        heavy_hitter: str | None = None,
    ) -> bool:
        """The release gate: upstream's usage limit (the pool's saturation below the band's
        ceiling), then upstream's saturation rule over the candidates (any one with room lets a
        request go) plus Sluice's caps. `heavy_hitter`: the fairness id of a band's heavy
        hitter asking; while the rest of its band is expected soon it leaves them the last
        endpoints with room (`background_headroom_endpoints`)."""
        settings = self.settings
        if self.over_ceiling(priority, now):
            if self.explain_holds:
                rules = {s.name: USAGE_LIMIT for s in states}
                inputs = {s.name: rule_inputs(s, now, priority) for s in states}
                lower_band = self.keeps_headroom_above(priority, now)
                self.holds[priority] = Hold(now, rules, inputs, lower_band, self.contended(now))
            return False
        lower_band = self.keeps_headroom_above(priority, now)
        if heavy_hitter is not None and self._others_expected(priority, heavy_hitter, now):
            ending = self._background_ending(priority, heavy_hitter, now)
            ok = has_room_for_background(
                states, now, settings, lower_band=lower_band, priority=priority, ending=ending
            )
            if not ok and self.explain_holds:
                self._note_hold(
                    states, priority, now, lower_band, True, background=True, ending=ending
                )
            return ok
        contended = self.contended(now)
        ending = None if lower_band else self._ending(priority, now)
        ok = any(
            has_room(
                s,
                now,
                settings,
                lower_band=lower_band,
                contended=contended,
                priority=priority,
                ending=ending,
            )
            for s in states
        )
        if not ok and self.explain_holds:
            self._note_hold(states, priority, now, lower_band, contended, ending=ending)
        return ok

    def _ending(self, priority: int, now: float) -> Ending | None:
        """The pending prefills about to end, for a request of the highest band expected while
        a band below it is: its reserve against their prefills is kept in time as well (the
        lower bands wait for prefills to end; it need not). Within one band the budget stays
        whole: there it is what keeps backlogged tenants' service even and a request near its
        prefix (`sluice bench fairness`, `shared-prefix`)."""
        if not self.demand.expected_below(priority, now):
            return None
        return Ending.within(now, self.settings.prefill_ending_s)

    def _background_ending(self, priority: int, heavy_hitter: str, now: float) -> Ending | None:
        """The pending prefills about to end, whose endpoints count as room kept for the rest
        of a heavy hitter's band: only while none of them waits (one that waits needs room
        now)."""
        if self._others_waiting(priority, heavy_hitter):
            return None
        return Ending.within(now, self.settings.background_ending_s)

    def _note_hold(
        self,
        states: Sequence[EndpointState],
        priority: int,
        now: float,
        lower_band: bool,
        contended: bool,
        *,
        background: bool = False,
        ending: Ending | None = None,
    ) -> None:
        rules = {
            s.name: hold_rule(
                s,
                now,
                self.settings,
                lower_band=lower_band,
                contended=contended,
                priority=priority,
                ending=ending,
            )
            or BACKGROUND_HEADROOM
            for s in states
        }
        inputs = {s.name: rule_inputs(s, now, priority, ending) for s in states}
        self.holds[priority] = Hold(now, rules, inputs, lower_band, contended, background)

    def _others_waiting(self, priority: int, fairness_id: str) -> bool:
        peers = self.peers
        return self.demand.others_waiting(priority, fairness_id) or (
            peers is not None and peers.others_waiting(priority, fairness_id)
        )

    def _others_expected(self, priority: int, fairness_id: str, now: float) -> bool:
        peers = self.peers
        return self.demand.others_expected(priority, fairness_id, now) or (
            peers is not None and peers.others_waiting(priority, fairness_id)
        )

    def placeable(
        self,
        states: Sequence[EndpointState],
        priority: int,
        now: float,
        *,
        heavy_hitter: str | None = None,
    ) -> Sequence[EndpointState]:
        """Where a released request of band `priority` may be placed (before the scorers).
        `heavy_hitter`: as the release gate was asked (`has_room`), so that the request goes
        where the gate found room: a heavy hitter that leaves headroom to the rest of its band
        gets a lower band's room (`has_room_for_background`), and is placed as one."""
        background = heavy_hitter is not None and self._others_expected(priority, heavy_hitter, now)
        lower_band = background or self.keeps_headroom_above(priority, now)
        # Placement by the budget, as the gate applied it: to a lower band (and a heavy hitter
        # placed as one, whether or not prefills compete), and to the highest band's requests
        # while a band below is expected (so prefills compete), with prefills about to end not
        # counted. Only those read `contended`: the rest skip the walk over the flows.
        ending = None
        if background:
            contended = True
        elif lower_band:
            contended = self.contended(now)
        else:
            ending = self._ending(priority, now)
            contended = ending is not None
        return placeable(
            states,
            now,
            self.settings,
            priority=priority,
            lower_band=lower_band,
            contended=contended,
            ending=ending,
        )

    def prefill_ends(
        self, endpoint: str, uncached_tokens: int, now: float, *, first_byte_expected: bool
    ) -> tuple[float, float]:
        """(when a prefill of `uncached_tokens` dispatched now to `endpoint` is expected to end,
        when it is taken as over if nothing said so before: a first byte, the engine's
        counter). They differ by the fallback factor for a first byte that should come."""
        expected, fallback = self.prefill.estimates(endpoint, uncached_tokens)
        return now + expected, now + (fallback if first_byte_expected else expected)

    def detached_end(
        self, endpoint: str, uncached_tokens: int, output_tokens: int, dispatched_at: float
    ) -> tuple[float, float]:
        """(when a detached request dispatched at `dispatched_at` is taken as over if no scrape
        showed it gone before, the prefill estimate that is part of it) — room/ends.py."""
        prefill_s = self.prefill.estimate(endpoint, uncached_tokens)
        return dispatched_at + self.ends.duration(endpoint, prefill_s, output_tokens), prefill_s
