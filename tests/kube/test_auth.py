"""`--metrics-endpoint-auth`: TokenReview + SubjectAccessReview against the test API server."""

from __future__ import annotations

from kubernetes_asyncio import client

from sluice.sources.auth import MetricsAuthorizer, bearer_token

from .apiserver import ApiServer, User

PROMETHEUS = "system:serviceaccount:monitoring:prometheus"


async def test_only_an_authenticated_and_authorized_token_may_read_metrics(
    kube: client.ApiClient, apiserver: ApiServer
) -> None:
    apiserver.tokens["scraper"] = User(PROMETHEUS, allowed={("get", "/metrics")})
    apiserver.tokens["nosy"] = User("system:serviceaccount:default:nosy")
    authorize = MetricsAuthorizer(kube)
    assert await authorize("scraper")
    assert not await authorize("nosy")  # authenticated, not authorized
    assert not await authorize("forged")  # not authenticated
    assert not await authorize(None)
    assert not await authorize("")


async def test_answers_are_cached_so_a_scraper_costs_two_calls_per_ttl(
    kube: client.ApiClient, apiserver: ApiServer
) -> None:
    apiserver.tokens["scraper"] = User(PROMETHEUS, allowed={("get", "/metrics")})
    now = [0.0]
    authorize = MetricsAuthorizer(kube, cache_seconds=10, clock=lambda: now[0])
    for _ in range(5):
        assert await authorize("scraper")
    reviews = [p for m, p in apiserver.requests if m == "POST"]
    assert len(reviews) == 2
    now[0] = 11.0
    assert await authorize("scraper")
    assert len([p for m, p in apiserver.requests if m == "POST"]) == 4


async def test_it_fails_closed_when_the_api_server_is_unreachable(apiserver: ApiServer) -> None:
    configuration = client.Configuration(host="http://127.0.0.1:9")  # nothing listens there
    async with client.ApiClient(configuration) as api:
        assert not await MetricsAuthorizer(api)("scraper")


def test_the_bearer_token_is_read_from_the_authorization_header() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer abc") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None
