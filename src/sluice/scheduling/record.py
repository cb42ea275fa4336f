"""What one scheduling cycle did, kept only when asked (decision receipts, traces, endpoint
scores): the candidates after each filter, each scorer's raw scores and weight, the totals and
the pick, with each plugin's duration.

The scheduler fills a `CycleRecord` in place when one is passed; without it the cycle pays one
`is None` check per plugin. Endpoints are named by `ip:port`; a profile names each candidate
list once (its scorers and picker share one).

What a receipt keeps once its request ended is the record `freeze`d: **one flat tuple** of str,
float, int and None (`Flat`, laid out below), which `thaw` reads back as nested tuples
(`FrozenCycle`). The receipt ring keeps each record for about a thousand requests. As objects
(a record, its profiles and steps, their lists) they were walked by every collection meanwhile
and counted towards the full ones: a finished receipt kept 13 tracked objects alive. A flat
tuple of such values is untracked at the first collection that sees it; nested tuples are too,
but one level per collection, and a receipt's were still tracked when they reached the oldest
generation. (`marshal`ling the nested tuples into bytes does the same for ~5 µs a request; the
flat tuple costs the scheduler a tuple extension per plugin.)

The flat layout, field after field:

    cycle:   primary, duration_s, number of profiles, then each profile
    profile: name, duration_s, number of totals, *totals, number of inputs, *input names,
             then each step, then None
    step:    kind, type_name, name, duration_s, number of candidates or -1 (the same as the
             step before, or the inputs for the first), *candidate names, weight,
             number of raw scores, *raw, number picked, *picked
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

from sluice.datalayer.registry import EndpointState

Names: TypeAlias = tuple[str, ...]  # endpoints, as `ip:port`
# One plugin's run. kind: filter | scorer | picker; candidates: a filter's survivors, the
# candidates a scorer or the picker saw; weight: a scorer's normalized weight; raw: a scorer's
# scores before the clamp, one per candidate; picked: the picker's indices into candidates,
# best first.
Step: TypeAlias = tuple[
    str,  # kind
    str,  # type_name
    str,  # name
    float,  # duration_s
    Names,  # candidates
    float,  # weight
    tuple[float, ...],  # raw
    tuple[int, ...],  # picked
]
# name, input candidates, steps, totals, duration_s (as in `ProfileRecord`)
FrozenProfile: TypeAlias = tuple[str, Names, tuple[Step, ...], tuple[float, ...], float]
# profiles, primary, duration_s (as in `CycleRecord`)
FrozenCycle: TypeAlias = tuple[tuple[FrozenProfile, ...], str | None, float]


Flat: TypeAlias = tuple[str | float | int | None, ...]
_SAME = -1  # a step's candidates are the previous step's (or the inputs)
# What a flat record keeps alive that nothing else does (CPython 3.11, 64-bit): a tuple's
# header with its collector's header, a reference per field, a float per float field (names,
# kinds and small ints are shared). Checked against tracemalloc by benchmarks/receipts_core.py.
_TUPLE_BYTES, _SLOT_BYTES, _FLOAT_BYTES = 56, 8, 24


class ProfileRecord:
    """One profile's run: its input candidates, each plugin's step (flat, as laid out in the
    module's docstring), the totals."""

    __slots__ = (
        "_floats",
        "_last",
        "duration_s",
        "input_candidates",
        "name",
        "scored",
        "steps",
        "totals",
    )

    def __init__(self, name: str, candidates: Sequence[EndpointState]) -> None:
        self.name = name
        self.input_candidates: Names = tuple([s.endpoint.hostport for s in candidates])
        self.steps: list[str | float | int] = []  # flat
        self.totals: tuple[float, ...] = ()  # weighted sums, aligned with the scorers' candidates
        self.duration_s = 0.0
        # the current candidates (the last filter's survivors, else the inputs) and their
        # names: what the scorers and the picker see, what the totals are aligned with
        self._last = candidates
        self.scored: Names = self.input_candidates
        self._floats = 0  # in `steps`

    def ran(
        self,
        kind: str,
        type_name: str,
        name: str,
        duration_s: float,
        candidates: Sequence[EndpointState],
        weight: float = 0.0,
        raw: Sequence[float] = (),
        picked: Sequence[int] = (),
    ) -> None:
        head = (kind, type_name, name, duration_s)
        if candidates is self._last:
            self.steps += (*head, _SAME, weight, len(raw), *raw, len(picked), *picked)
        else:  # a filter's survivors: a new list
            self._last = candidates
            names = self.scored = tuple([s.endpoint.hostport for s in candidates])
            self.steps += (*head, len(names), *names, weight, len(raw), *raw, len(picked), *picked)
        self._floats += 2 + len(raw)

    def flat(self) -> list[str | float | int | None]:
        totals, inputs = self.totals, self.input_candidates
        return [
            self.name,
            self.duration_s,
            len(totals),
            *totals,
            len(inputs),
            *inputs,
            *self.steps,
            None,
        ]


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
        return dict(zip(profile.scored, profile.totals))


def scored_candidates(profile: FrozenProfile) -> Names:
    """The candidates the scorers and the picker saw, which the totals are aligned with: the
    last step's (the filters run first), else the inputs — `ProfileRecord.scored`, frozen."""
    _, candidates, steps, _, _ = profile
    return steps[-1][4] if steps else candidates


def freeze(cycle: CycleRecord) -> tuple[Flat, int]:
    """`cycle` as one flat tuple (see the module's docstring), and an upper bound of the bytes
    it keeps alive."""
    fields: list[str | float | int | None] = [cycle.primary, cycle.duration_s, len(cycle.profiles)]
    floats = 1
    for profile in cycle.profiles:
        fields += profile.flat()
        floats += 1 + len(profile.totals) + profile._floats
    return tuple(fields), _TUPLE_BYTES + _SLOT_BYTES * len(fields) + _FLOAT_BYTES * floats


class StepAt(NamedTuple):
    """Where one step's fields are in a flat record (`layout`); its candidates are where they
    were last listed (the previous step's, or the profile's inputs, when they are the same)."""

    kind: int
    type_name: int
    name: int
    duration_s: int
    candidates: range
    weight: int
    raw: range
    picked: range


class ProfileAt(NamedTuple):
    """Where one profile's fields are in a flat record (`layout`)."""

    name: int
    duration_s: int
    totals: range
    inputs: range
    steps: tuple[StepAt, ...]


def layout(flat: Flat) -> tuple[tuple[ProfileAt, ...], tuple[int, ...]]:
    """Where each field of a flat record is (the one reader of the layout above), and the
    positions the walk read to find them: the counts, the same-candidates markers, each step's
    kind and each profile's closing None. Two records equal at those positions (and of the
    same length) have the same layout."""
    f: Any = flat  # its fields' types follow from the layout, not from the tuple's type
    read = [2]
    at = 3
    profiles = []
    for _ in range(f[2]):
        n = f[at + 2]
        read.append(at + 2)
        totals = range(at + 3, at + 3 + n)
        at += 3 + n
        read.append(at)
        inputs = previous = range(at + 1, at + 1 + f[at])
        at = inputs.stop
        steps = []
        while f[at] is not None:
            read += (at, at + 4)
            n = f[at + 4]
            head = at
            at += 5
            if n != _SAME:
                previous = range(at, at + n)
                at += n
            weight = at
            raw = range(at + 2, at + 2 + f[at + 1])
            read.append(at + 1)
            at = raw.stop
            read.append(at)
            picked = range(at + 1, at + 1 + f[at])
            at = picked.stop
            steps.append(StepAt(head, head + 1, head + 2, head + 3, previous, weight, raw, picked))
        read.append(at)
        profiles.append(ProfileAt(totals.start - 3, totals.start - 2, totals, inputs, tuple(steps)))
        at += 1  # the profile's None
    return tuple(profiles), tuple(read)


def thaw(flat: Flat, *, scores: bool = True) -> FrozenCycle:
    """A flat record as nested tuples; without `scores`, the scorers' raw scores are left out
    (empty)."""
    f: Any = flat
    profiles = []
    for p in layout(flat)[0]:
        steps = tuple(
            (
                f[s.kind],
                f[s.type_name],
                f[s.name],
                f[s.duration_s],
                f[s.candidates.start : s.candidates.stop],
                f[s.weight],
                f[s.raw.start : s.raw.stop] if scores else (),
                f[s.picked.start : s.picked.stop],
            )
            for s in p.steps
        )
        totals = f[p.totals.start : p.totals.stop]
        inputs = f[p.inputs.start : p.inputs.stop]
        profiles.append((f[p.name], inputs, steps, totals, f[p.duration_s]))
    return tuple(profiles), f[0], f[1]
