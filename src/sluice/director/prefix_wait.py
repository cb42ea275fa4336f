"""Wait for a prefix being computed, or compute it elsewhere: whichever the estimates say is
sooner (issue #14).

A request whose best endpoint E matched a prefix that E is still computing for an earlier request
(`Scheduler.blocked_on`) has two honest options. Sent to E now, it computes the prefix a second
time (vLLM reuses only computed blocks; llama.cpp only a free slot's cache). So either it waits
for that first computation and then prefills only its own suffix on E, or it goes where its
prefill, cold or not, ends sooner. Both sides come from the room's prefill estimate
(`PrefillEstimator`, fitted on each endpoint's first bytes and counters):

    wait      = the first computation's time left + E's prefill of what is left after the match
    elsewhere = min over the other endpoints F of F's prefill of (its own uncached part + the
                prompt tokens pending there)

A hold is bounded: it ends when the first computation does, or at `now + 4 x wait + 1 s`,
never later than `max_prefill_hold_s`, so a lost signal costs a bounded delay, not a stuck
request (generous: an estimator that has not learned the engine yet guesses short, and a hold
that ends before the first computation recomputes the prefix anyway).
Sans-I/O: the front end awaits `Hold`, the core decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sluice.datalayer.endpoint import Endpoint
from sluice.datalayer.registry import EndpointState
from sluice.scheduling.prefix_computing import Blocked

# (endpoint, uncached tokens) -> seconds to first token
Estimate = Callable[[str, int], float]
_SLACK_S = 1.0
_HOLD_FACTOR = 4.0


@dataclass(frozen=True, slots=True)
class Hold:
    """Forward the request only once `blocker` finished computing (or at `until`)."""

    blocker: str
    until: float


@dataclass(frozen=True, slots=True)
class Computing:
    """A dispatch as the wait rule needs it: when it was sent, how much it computes."""

    at: float
    uncached_tokens: int


def wait_or_move(
    *,
    prompt_tokens: int,
    endpoints: tuple[Endpoint, ...],
    blocked: Blocked,
    blocker: Computing | None,
    others: Sequence[tuple[EndpointState, float]],
    estimate: Estimate,
    now: float,
    max_hold_s: float,
) -> tuple[tuple[Endpoint, ...], Hold | None]:
    """The endpoints to use (primary first) and the hold, if the request should wait.
    `others`: the other endpoints it may go to, each with its expected cached share."""
    primary = endpoints[0]
    left_after = round(prompt_tokens * (1.0 - blocked.matched / blocked.total))
    first_left = 0.0
    if blocker is not None:
        first_left = max(0.0, estimate(primary.name, blocker.uncached_tokens) - (now - blocker.at))
    wait = first_left + estimate(primary.name, left_after)
    best: tuple[float, EndpointState] | None = None
    for state, cached in others:
        if state.endpoint == primary:
            continue
        own = round(prompt_tokens * (1.0 - cached))
        cost = estimate(state.name, own + state.pending_prefill_tokens)
        if best is None or cost < best[0]:
            best = (cost, state)
    if best is not None and best[0] < wait:
        moved = best[1].endpoint
        return (moved, *(e for e in endpoints if e != moved)), None
    until = now + min(max_hold_s, _HOLD_FACTOR * wait + _SLACK_S)
    return endpoints, Hold(blocked.blocker, until)
