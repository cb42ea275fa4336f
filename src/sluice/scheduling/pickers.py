"""Pickers: turn weighted totals into the chosen endpoint plus fallbacks."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Annotated

from sluice.datalayer.registry import EndpointState
from sluice.scheduling.framework import Picker, PluginContext
from sluice.scheduling.parameters import PluginParameters, at_least


class _CountedPicker(Picker):
    class Parameters(PluginParameters):
        max_num_of_endpoints: Annotated[int, at_least(1)] = 1

    def __init__(self, name: str, max_endpoints: int, rng: random.Random) -> None:
        super().__init__(name)
        self.max_endpoints = max_endpoints
        self.rng = rng

    @classmethod
    def from_params(cls, name: str, params: Parameters, ctx: PluginContext) -> Picker:
        return cls(name, params.max_num_of_endpoints, ctx.rng)


class MaxScorePicker(_CountedPicker):
    """Highest total first, ties broken at random; `maxNumOfEndpoints` gives fallbacks."""

    type_name = "max-score-picker"

    def pick(self, candidates: Sequence[EndpointState], scores: list[float]) -> list[int]:
        n = len(scores)
        if self.max_endpoints == 1:  # the hot path: no sort, no shuffle
            best = max(scores)
            ties = [i for i in range(n) if scores[i] == best]
            return [ties[self.rng.randrange(len(ties))] if len(ties) > 1 else ties[0]]
        rand = self.rng.random
        keys = [(-scores[i], rand(), i) for i in range(n)]
        keys.sort()
        return [k[2] for k in keys[: self.max_endpoints]]


class RandomPicker(_CountedPicker):
    type_name = "random-picker"

    def pick(self, candidates: Sequence[EndpointState], scores: list[float]) -> list[int]:
        return self.rng.sample(range(len(scores)), min(self.max_endpoints, len(scores)))


class WeightedRandomPicker(_CountedPicker):
    """A-Res weighted sampling without replacement: key = U^(1/score), highest keys win.
    All scores 0 → uniform random, as upstream."""

    type_name = "weighted-random-picker"

    def pick(self, candidates: Sequence[EndpointState], scores: list[float]) -> list[int]:
        if not any(s > 0 for s in scores):
            return self.rng.sample(range(len(scores)), min(self.max_endpoints, len(scores)))
        rand = self.rng.random
        keyed: list[tuple[float, int]] = []
        for i, s in enumerate(scores):
            # log U / s is monotone in U^(1/s) and avoids underflow; score 0 never wins.
            key = math.log(rand() or 1e-300) / s if s > 0 else -math.inf
            keyed.append((key, i))
        keyed.sort(reverse=True)
        return [i for _, i in keyed[: self.max_endpoints]]
