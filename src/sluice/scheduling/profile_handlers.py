"""Profile handlers decide which profiles run and which result is primary."""

from __future__ import annotations

from collections.abc import Mapping

from sluice.scheduling.framework import (
    CycleState,
    NoEndpointsError,
    ProfileHandler,
    ProfileResult,
    ProfileRunner,
    SchedulingResult,
)


class SingleProfileHandler(ProfileHandler):
    """Runs the one configured profile once; it is the primary."""

    type_name = "single-profile-handler"

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
