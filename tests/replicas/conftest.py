"""A real Redis for the replica tests (`make test` installs Debian's redis-server)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sluice.bench.harness.store import StoreProcess, redis_binary, redis_server


def need_redis() -> None:
    if redis_binary() is None:
        reason = "redis-server is not installed: `make test` installs it (make store)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def redis() -> Iterator[StoreProcess]:
    need_redis()
    with redis_server() as store:
        yield store
