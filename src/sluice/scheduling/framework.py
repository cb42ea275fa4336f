"""The plugin framework's vocabulary: the four plugin kinds, per-cycle state and results.

Upstream's model (facts §5.1): a ProfileHandler chooses profiles; each profile runs Filters,
then weighted Scorers (each score in [0, 1]), then a Picker. Plugins see endpoints as live
`EndpointState`s (metrics + Sluice's in-flight accounting) and return plain lists aligned
with their input, which keeps a cycle over 64 endpoints allocation-light.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.requests.model import InferenceRequest
from sluice.scheduling.parameters import PluginParameters

# Data one plugin leaves in `CycleState.data` for others, by declared key: a plugin names the
# keys it `produces` and `consumes`, and the config loader refuses a profile where a consumer
# runs without a producer before it. (endpoint name -> matched blocks, 1 / total blocks)
PREFIX_MATCH = "prefix-match"


@dataclass(slots=True)
class PluginContext:
    """What a plugin may receive at construction besides its parameters."""

    rng: random.Random = field(default_factory=random.Random)
    engine: str = "vllm"  # the model servers' kind (`--engine`), for engine-dependent defaults


MatchObserver = Callable[[float, int], None]


@runtime_checkable
class PrefixCacheView(Protocol):
    """Optional capability: a plugin that keeps a prefix-cache index the scheduler can ask
    (and prune when endpoints leave)."""

    on_match: MatchObserver | None

    def cached_fraction(self, request: InferenceRequest, endpoint: Endpoint) -> float: ...

    def prune(self, live_endpoints: set[str]) -> None: ...

    def index_size(self) -> int: ...


class NoEndpointsError(Exception):
    """Nothing is left to schedule on (empty pool, subset hint, or filters removed all)."""


@dataclass(slots=True)
class CycleState:
    """Scratch space for one scheduling cycle, shared by the plugins of every profile."""

    request: InferenceRequest
    now: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoredEndpoint:
    endpoint: Endpoint
    score: float


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """What one profile picked: targets in preference order (primary first)."""

    targets: tuple[ScoredEndpoint, ...]


@dataclass(frozen=True, slots=True)
class SchedulingResult:
    profile_results: Mapping[str, ProfileResult]
    primary_profile: str

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The primary profile's targets: the chosen endpoint first, then fallbacks."""
        return tuple(t.endpoint for t in self.profile_results[self.primary_profile].targets)

    @property
    def primary(self) -> Endpoint:
        return self.profile_results[self.primary_profile].targets[0].endpoint


class Plugin:
    """Base of every plugin: a registered `type_name` and the instance's configured `name`,
    built by `from_params` from its validated `Parameters` (by default: none accepted)."""

    type_name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # "filter" | "scorer" | "picker" | "profile-handler" | "data"
    # The `CycleState.data` keys this plugin writes and reads (see PREFIX_MATCH).
    produces: ClassVar[frozenset[str]] = frozenset()
    consumes: ClassVar[frozenset[str]] = frozenset()
    Parameters: ClassVar[type[PluginParameters]] = PluginParameters

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_params(cls, name: str, params: Any, ctx: PluginContext) -> Plugin:
        """The plugin named `name`; `params` is an instance of `cls.Parameters`."""
        return cls(name)

    def on_dispatch(
        self, cycle: CycleState | None, request: InferenceRequest, target: Endpoint
    ) -> None:
        """The request was sent to `target` (upstream PreRequest). `cycle` is the scheduling
        cycle that chose it when still known."""

    def on_complete(self, request: InferenceRequest, target: Endpoint) -> None:
        """The request finished on `target` (upstream ResponseComplete)."""


class Filter(Plugin):
    kind = "filter"

    def filter(
        self, cycle: CycleState, candidates: Sequence[EndpointState]
    ) -> Sequence[EndpointState]:
        raise NotImplementedError


class Scorer(Plugin):
    kind = "scorer"
    # Built-in scorers guarantee [0, 1] by construction and skip the clamp (hot path);
    # anything else is clamped.
    bounded: ClassVar[bool] = False

    def score(self, cycle: CycleState, candidates: Sequence[EndpointState]) -> list[float]:
        """One score per candidate, same order; values outside [0, 1] are clamped."""
        raise NotImplementedError


class Picker(Plugin):
    kind = "picker"

    def pick(self, candidates: Sequence[EndpointState], scores: list[float]) -> list[int]:
        """Indices into `candidates`, best first (at least one when candidates is non-empty)."""
        raise NotImplementedError


@runtime_checkable
class ProfileRunner(Protocol):
    """What a profile handler can run: a named profile."""

    @property
    def name(self) -> str: ...


class ProfileHandler(Plugin):
    kind = "profile-handler"

    def pick_profiles(
        self,
        cycle: CycleState,
        profiles: Mapping[str, ProfileRunner],
        results: Mapping[str, ProfileResult | None],
    ) -> list[str]:
        """Profiles to run next, given the results so far; empty ends the cycle."""
        raise NotImplementedError

    def process_results(
        self, cycle: CycleState, results: Mapping[str, ProfileResult | None]
    ) -> SchedulingResult:
        raise NotImplementedError


class DataPlugin(Plugin):
    """Upstream data-layer plugins (gate `dataLayer`); accepted so such configs load. Sluice's
    scraper does their job."""

    kind = "data"
