"""What flow control is configured with: the typed form of the YAML's `flowControl:` block.

Reading the YAML is `sluice.config`'s job (`sluice.config.parse_flow_control`); this module holds
the values and the policy names they may refer to, upstream's and Sluice's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sluice.flowcontrol.bands import IDLE_FLOW_TIMEOUT_S, MAX_IDLE_FLOWS
from sluice.flowcontrol.fairness import GLOBAL_STRICT, ROUND_ROBIN, TOKEN_FAIR, TokenCost
from sluice.flowcontrol.ordering import EDF, FCFS, SLO_DEADLINE

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


# Upstream's per-band request cap (llm-d-router v0.9+, #2123); 0 there means this default.
UPSTREAM_BAND_MAX_REQUESTS = 5000
# Upstream's defaultRequestTTL when unset (llm-d-router v0.9+).
UPSTREAM_DEFAULT_REQUEST_TTL_S = 60.0


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
    # Upstream's `defaultNegativePriorityBand`: the template for priorities below 0 (None: the
    # default band's).
    default_negative_band: BandConfig | None = None
    bands: tuple[BandConfig, ...] = ()
    per_flow_max_requests: int = 0
    per_flow_max_bytes: int = 0
    token_cost: TokenCost = field(default_factory=TokenCost)
    fairness_weights: Mapping[str, float] = field(default_factory=dict)
    engine_priority: bool = False
    # The window over which a band's heavy hitter is found (`Band.heavy_hitter`); its requests
    # say so when they ask for room (the room may keep a reserve from them). 0 turns it off.
    fair_share_window_s: float = 30.0
    # Idle flows (nothing queued or in flight) whose counter is above the band's floor are
    # kept at most this long (upstream's `FlowGCTimeout`, 5 minutes; 0: no timeout) and at
    # most this many per band, the oldest idle forgotten first (docs/flowcontrol.md).
    idle_flow_timeout_s: float = IDLE_FLOW_TIMEOUT_S
    max_idle_flows: int = MAX_IDLE_FLOWS

    def band(self, priority: int) -> BandConfig:
        """The configured band, or one made from the default template (as upstream)."""
        for band in self.bands:
            if band.priority == priority:
                return band
        template = self.default_band
        if priority < 0 and self.default_negative_band is not None:
            template = self.default_negative_band
        return replace(template, priority=priority)

    @property
    def no_endpoint_ttl_s(self) -> float | None:
        """The wait allowed while the pool has no endpoints (None: no limit)."""
        ttl = self.no_endpoint_request_ttl_s
        if ttl is None:
            ttl = self.default_request_ttl_s or UPSTREAM_NO_ENDPOINT_REQUEST_TTL_S
        return ttl or None

    def weight(self, fairness_id: str) -> float:
        return self.fairness_weights.get(fairness_id, 1.0)
