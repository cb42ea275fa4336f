"""`session-affinity-scorer`: Sluice's server-side session map, read under its own parameters
(`headerName`, `maxSessions`) and under llm-d-router's `strategy: session_id` with
`sessionIdConfig` (header sources in priority order, `evictionTtlSeconds`); upstream's
`encoded_endpoint_header` strategy is refused naming the one Sluice has."""

from __future__ import annotations

import pytest

from sluice.config import ConfigError, load_config
from sluice.datalayer.endpoint import EngineMetrics
from sluice.scheduling.affinity import SessionAffinityScorer
from sluice.scheduling.framework import CycleState

from .helpers import NOW, pool, request, scheduler

UPSTREAM_SESSION_ID = """
plugins:
- type: session-affinity-scorer
  parameters:
    strategy: session_id
    sessionIdConfig:
      sources:
        - header: x-session-id
        - header: x-conversation
      evictionTtlSeconds: 30
      evictionSweepSeconds: 10
"""


def session_scorer(yaml_text: str) -> SessionAffinityScorer:
    [profile] = scheduler(yaml_text).profiles.values()
    [scorer] = [s for s, _ in profile.scorers if isinstance(s, SessionAffinityScorer)]
    return scorer


def test_a_session_goes_back_to_the_endpoint_that_served_it() -> None:
    scorer = session_scorer("plugins:\n- type: session-affinity-scorer\n")
    states = pool(EngineMetrics(), EngineMetrics()).snapshot()
    first = request("hi", headers={"x-session-id": "s1"})
    assert scorer.score(CycleState(first, NOW), states) == [0.0, 0.0]  # unbound: no preference
    scorer.on_dispatch(None, first, states[1].endpoint)
    again = request("more", headers={"x-session-id": "s1"})
    assert scorer.score(CycleState(again, NOW), states) == [0.0, 1.0]
    other = request("hi", headers={"x-session-id": "s2"})
    assert scorer.score(CycleState(other, NOW), states) == [0.0, 0.0]


def test_upstreams_session_id_strategy_reads_its_sources_in_order_and_forgets_after_the_ttl() -> (
    None
):
    scorer = session_scorer(UPSTREAM_SESSION_ID)
    states = pool(EngineMetrics(), EngineMetrics()).snapshot()
    first = request("hi", headers={"x-conversation": "c1"})  # the second source
    scorer.score(CycleState(first, NOW), states)
    scorer.on_dispatch(None, first, states[0].endpoint)
    both = request("hi", headers={"x-session-id": "s9", "x-conversation": "c1"})
    assert scorer.score(CycleState(both, NOW), states) == [0.0, 0.0]  # the first source wins
    again = request("hi", headers={"x-conversation": "c1"})
    assert scorer.score(CycleState(again, NOW + 30), states) == [1.0, 0.0]  # within the TTL
    assert scorer.score(CycleState(again, NOW + 30.5), states) == [0.0, 0.0]  # unused 30.5 s
    scorer.on_dispatch(None, again, states[1].endpoint)  # rebinds where it went
    assert scorer.score(CycleState(again, NOW + 31), states) == [0.0, 1.0]


def test_at_most_max_sessions_are_remembered_least_recently_used_first_out() -> None:
    scorer = session_scorer(
        "plugins:\n- type: session-affinity-scorer\n  parameters: {maxSessions: 2}\n"
    )
    states = pool(EngineMetrics(), EngineMetrics()).snapshot()
    for session in ("a", "b", "c"):
        scorer.on_dispatch(None, request(headers={"x-session-id": session}), states[1].endpoint)
    scores = {
        session: scorer.score(CycleState(request(headers={"x-session-id": session}), NOW), states)
        for session in ("a", "b", "c")
    }
    assert scores == {"a": [0.0, 0.0], "b": [0.0, 1.0], "c": [0.0, 1.0]}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            "{strategy: encoded_endpoint_header}",
            "test.yaml:3: plugins[0].parameters.strategy: the encoded_endpoint_header strategy "
            "(an endpoint token the client echoes) is not implemented; use strategy: session_id",
        ),
        (
            "{encodedEndpointHeaderConfig: {header: x-session-token}}",  # upstream's default
            "test.yaml:3: plugins[0].parameters.encodedEndpointHeaderConfig: the "
            "encoded_endpoint_header strategy",
        ),
        (
            "{strategy: session_id, sessionIdConfig: {sources: [{attribute: agent-identity}]}}",
            "test.yaml:3: plugins[0].parameters.sessionIdConfig.sources[0].attribute: request "
            "attribute 'agent-identity': Sluice has no plugin that publishes request attributes",
        ),
        (
            "{profileName: prefill}",
            "test.yaml:3: plugins[0].parameters.profileName: Sluice schedules one profile's",
        ),
        (
            "{strategy: session_id, sessionIdConfig: {evictionTtlSeconds: 0}}",
            "test.yaml:3: plugins[0].parameters.sessionIdConfig.evictionTtlSeconds: ",
        ),
    ],
)
def test_upstream_parameters_sluice_cannot_honour_are_errors_at_their_line(
    parameters: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            f"plugins:\n- type: session-affinity-scorer\n  parameters: {parameters}\n", "test.yaml"
        )
    assert str(caught.value).startswith(message)
