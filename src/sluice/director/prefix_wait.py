"""Wait for a prefix being computed, or compute it elsewhere: whichever the estimates say costs
less (issue #14).

A request whose best endpoint E matched a prefix that E is still computing for an earlier request
(`Scheduler.blocked_on`) has two honest options. Sent to E now, it computes the prefix a second
time (vLLM reuses only computed blocks; llama.cpp only a free slot's cache). So either it waits
for that first computation and then prefills only its own suffix on E, or it goes where its
prefill, cold or not, ends sooner. Both sides come from the room's prefill estimate
(`PrefillEstimator`, fitted on each endpoint's first bytes and counters):

    wait      = the first computation's time left + E's prefill of what is left after the match
    elsewhere = min over the other endpoints F of F's prefill of (its own uncached part + the
                prompt tokens pending there)

It moves only when `2 x elsewhere < wait`: a move computes tokens that are (or soon will be)
cached on E, so the pool pays that prefill twice and whatever queues on F waits behind it;
waiting costs this request alone. (Measured on two loaded llama-servers: moving whenever
`elsewhere < wait`, 8 of 24 held requests moved in two trials and one trial computed its 4 new
prefixes 11 times; counted twice, none moved and 3 trials computed them 4, 4 and 5 times —
benchmarks/llamacpp_duplicate_prefills.py.)

A hold ends when the first computation does — its request's prefill (vLLM) or its end
(llama.cpp); every dispatch ends exactly once, completed, failed or detached, so that signal
always comes — and never later than `max_prefill_hold_s`. It is not cut at a multiple of the
estimate: an estimator that has not learned the engine yet guesses short (the prior is an
H100's; llama.cpp at one thread prefills ~10x slower), and a hold that ends before the first
computation only computes the prefix a second time, the cost it was meant to save.
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
# A move computes again what E has or will have: its prefill counts twice (see above).
DUPLICATE_COST = 2.0


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
    if best is not None and DUPLICATE_COST * best[0] < wait:
        moved = best[1].endpoint
        return (moved, *(e for e in endpoints if e != moved)), None
    return endpoints, Hold(blocked.blocker, now + max_hold_s)
