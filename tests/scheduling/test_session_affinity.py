"""`session-affinity-scorer`: upstream's default `encoded_endpoint_header` strategy (a bare entry:
the endpoint's `namespace/name`, base64, in `x-session-token`, written on the response and sent
back by the client), and the server-side session map, read under Sluice's own parameters
(`headerName`, `maxSessions`) and under llm-d-router's `strategy: session_id` with
`sessionIdConfig` (header sources in priority order, `evictionTtlSeconds`)."""

from __future__ import annotations

import base64

import pytest

from sluice.config import ConfigError, load_config
from sluice.datalayer.endpoint import EngineMetrics
from sluice.scheduling.affinity import SessionAffinityScorer, SessionTokenScorer
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


def token_scorer(yaml_text: str) -> SessionTokenScorer:
    [profile] = scheduler(yaml_text).profiles.values()
    [scorer] = [s for s, _ in profile.scorers if isinstance(s, SessionTokenScorer)]
    return scorer


def test_a_bare_entry_is_upstreams_encoded_token_written_back_and_followed() -> None:
    scorer = token_scorer("plugins:\n- type: session-affinity-scorer\n")
    assert scorer.header == "x-session-token"
    states = pool(EngineMetrics(), EngineMetrics()).snapshot()
    first = request("hi")
    assert scorer.score(CycleState(first, NOW), states) == [0.0, 0.0]  # no token: no preference
    served = states[1].endpoint
    scorer.on_dispatch(None, first, served)
    token = first.response_headers["x-session-token"]
    assert base64.b64decode(token).decode() == f"{served.namespace}/{served.name}"  # upstream's
    again = request("more", headers={"x-session-token": token})
    assert scorer.score(CycleState(again, NOW), states) == [0.0, 1.0]
    for bad in ("not base64!", base64.b64encode(b"other/pod-rank-0").decode()):
        stranger = request("hi", headers={"x-session-token": bad})
        assert scorer.score(CycleState(stranger, NOW), states) == [0.0, 0.0]


def test_the_token_header_is_configurable_and_normalized_as_upstream() -> None:
    scorer = token_scorer(
        "plugins:\n- type: session-affinity-scorer\n  parameters:\n"
        "    encodedEndpointHeaderConfig: {header: ' X-My-Token '}\n"
    )
    assert scorer.header == "x-my-token"
    states = pool(EngineMetrics(), EngineMetrics()).snapshot()
    first = request("hi")
    scorer.on_dispatch(None, first, states[0].endpoint)
    assert set(first.response_headers) == {"x-my-token"}
    again = request("more", headers={"x-my-token": first.response_headers["x-my-token"]})
    assert scorer.score(CycleState(again, NOW), states) == [1.0, 0.0]


def test_sluices_own_parameters_or_strategy_session_id_mean_the_server_side_map() -> None:
    for params in ("{headerName: x-session-id}", "{maxSessions: 10}", "{strategy: session_id}"):
        text = f"plugins:\n- type: session-affinity-scorer\n  parameters: {params}\n"
        assert isinstance(session_scorer(text), SessionAffinityScorer)


def test_a_session_goes_back_to_the_endpoint_that_served_it() -> None:
    scorer = session_scorer(
        "plugins:\n- type: session-affinity-scorer\n  parameters: {headerName: x-session-id}\n"
    )
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
            "{strategy: sticky}",
            "test.yaml:3: plugins[0].parameters.strategy: must be encoded_endpoint_header or "
            "session_id, got 'sticky'",
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
