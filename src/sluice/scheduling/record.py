"""What one scheduling cycle did, kept only when asked (decision receipts, traces, endpoint
scores): the candidates after each filter, each scorer's raw scores and weight, the totals and
the pick, with each plugin's duration.

The scheduler fills a `CycleRecord` in place when one is passed; without it the cycle pays one
`is None` check per plugin. Candidate lists are the ones the plugins returned, kept by
reference; names are read when a receipt is rendered. Scores (raw and totals) and picks are
copied into tuples: of floats or ints only, which the garbage collector stops tracking at its
first pass over them, whereas the receipt ring keeps each record alive for about a thousand
requests and every list in it would be walked by each collection meanwhile (a finished
receipt kept 20 tracked objects alive, 13 now).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sluice.datalayer.registry import EndpointState


@dataclass(slots=True)
class PluginStep:
    """One plugin's run: `kind` is filter | scorer | picker."""

    kind: str
    type_name: str
    name: str
    duration_s: float
    # filter: the candidates it kept; scorer/picker: the candidates it saw
    candidates: Sequence[EndpointState]
    weight: float = 0.0  # scorer: normalized weight
    raw: Sequence[float] = ()  # scorer: one score per candidate, before the clamp
    picked: Sequence[int] = ()  # picker: indices into `candidates`, best first


@dataclass(slots=True)
class ProfileRecord:
    name: str
    steps: list[PluginStep] = field(default_factory=list)
    input_candidates: Sequence[EndpointState] = ()
    totals: Sequence[float] = ()  # weighted sums, aligned with the scorers' candidates
    duration_s: float = 0.0


@dataclass(slots=True)
class CycleRecord:
    """Every profile run in one cycle, in run order; `primary` once the handler chose."""

    profiles: list[ProfileRecord] = field(default_factory=list)
    primary: str | None = None
    duration_s: float = 0.0

    def primary_profile(self) -> ProfileRecord | None:
        for profile in self.profiles:
            if profile.name == self.primary:
                return profile
        return self.profiles[0] if self.profiles else None

    def endpoint_scores(self) -> dict[str, float]:
        """The primary profile's weighted total per scored endpoint (`ip:port`), picked or not —
        upstream's `x-gateway-destination-endpoint-scores`."""
        profile = self.primary_profile()
        if profile is None:
            return {}
        candidates = _scored_candidates(profile)
        return {s.endpoint.hostport: float(t) for s, t in zip(candidates, profile.totals)}


def _scored_candidates(profile: ProfileRecord) -> Sequence[EndpointState]:
    for step in reversed(profile.steps):
        if step.kind != "filter":
            return step.candidates
    return profile.steps[-1].candidates if profile.steps else profile.input_candidates
