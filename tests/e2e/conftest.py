"""Two real llama.cpp engines, shared by every test of the session that asks for them.

`make test` builds `llama-server` into the cache first (sluice.bench.engines.build), so in CI
the engines always run; on a developer's machine without the build the tests that need them are
skipped with the command that builds it. Nothing is downloaded here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sluice.bench.engines.build import LlamaCppInstall, find_install, install_dir
from sluice.bench.engines.llamacpp import LlamaServers, LlamaServerSettings, start_llama_servers

# One thread each: two engines fit the two cores, as in the measurements. Two slots
# each, so a second request runs beside the first instead of queueing behind it.
LLAMACPP_SETTINGS = LlamaServerSettings(threads=1, slots=2, context_per_slot=2048)


def llamacpp_install() -> LlamaCppInstall:
    install = find_install()
    if install is not None:
        return install
    reason = f"llama-server is not built ({install_dir()}): run `make engines` (or `make test`)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} — in CI `make test` builds it before the tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_servers() -> Iterator[LlamaServers]:
    with start_llama_servers(2, llamacpp_install(), LLAMACPP_SETTINGS) as servers:
        yield servers
