"""Fixtures: a running test API server and kubernetes_asyncio clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from kubernetes_asyncio import client

from .apiserver import ApiServer


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = ApiServer(bookmark_interval=0.2)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def new_client(apiserver: ApiServer) -> AsyncIterator[Callable[[], client.ApiClient]]:
    """Each call is one more process talking to the cluster (a replica, the test itself)."""
    made: list[client.ApiClient] = []

    def make(token: str | None = None) -> client.ApiClient:
        configuration = client.Configuration(host=apiserver.url)
        if token:
            configuration.api_key = {"authorization": token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
        api = client.ApiClient(configuration)
        made.append(api)
        return api

    yield make
    for api in made:
        await api.close()


@pytest.fixture
async def kube(new_client: Callable[[], client.ApiClient]) -> client.ApiClient:
    """The test's own client: how the test changes the cluster."""
    return new_client()
