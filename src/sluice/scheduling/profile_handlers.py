"""Profile handlers decide which profiles run and which result is primary."""

from __future__ import annotations

from collections.abc import Mapping

from sluice.scheduling.framework import (
    CycleState,
    NoEndpointsError,
    PluginContext,
    ProfileHandler,
    ProfileResult,
    ProfileRunner,
    SchedulingResult,
)
from sluice.scheduling.params import Params


class SingleProfileHandler(ProfileHandler):
    """Runs the one configured profile once; it is the primary."""

    type_name = "single-profile-handler"

    @classmethod
    def from_params(cls, name: str, params: Params, ctx: PluginContext) -> ProfileHandler:
        params.finish()
        return cls(name)

    def pick_profiles(
        self,
        cycle: CycleState,
        profiles: Mapping[str, ProfileRunner],
        results: Mapping[str, ProfileResult | None],
    ) -> list[str]:
        return [] if results else list(profiles)

    def process_results(
        self, cycle: CycleState, results: Mapping[str, ProfileResult | None]
    ) -> SchedulingResult:
        name, result = next(iter(results.items()))
        if result is None or not result.targets:
            raise NoEndpointsError(f"profile {name!r}: no endpoints available")
        return SchedulingResult({name: result}, name)
