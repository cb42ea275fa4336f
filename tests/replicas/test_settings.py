"""The `--replicas-*` flags: each mistake names the flag and the fix; accepted flags mean what
they say."""

from __future__ import annotations

import pytest

from sluice.cli.flags import FlagError
from sluice.cli.serve_options import parse_serve_options
from sluice.replicas.settings import STORE_TIMEOUT_DEFAULT_S, replica_settings

BASE = ["--pool-name=pool"]


def test_off_by_default_and_on_with_a_store() -> None:
    assert not replica_settings(parse_serve_options(BASE).replica_flags()).enabled
    options = parse_serve_options(
        [*BASE, "--replicas-store=redis://store:6379/0", "--replica-id=sluice-0"]
    )
    settings = replica_settings(options.replica_flags())
    assert settings.enabled and settings.replica_id == "sluice-0"
    assert settings.sync_interval_s == 0.05 and settings.lease_s == 1.0
    assert settings.store_timeout_s == STORE_TIMEOUT_DEFAULT_S


@pytest.mark.parametrize(
    ("flags", "timeout_s"),
    [
        ([], STORE_TIMEOUT_DEFAULT_S),
        (["--replicas-sync-interval=500ms", "--replicas-lease=2s"], 0.5),  # one interval
        (["--replicas-sync-interval=20ms", "--replicas-lease=200ms"], 0.1),  # half a lease
        (["--replicas-store-timeout=700ms"], 0.7),  # as given
    ],
)
def test_the_store_timeout_is_at_least_an_interval_and_below_a_lease(
    flags: list[str], timeout_s: float
) -> None:
    options = parse_serve_options([*BASE, "--replicas-store=redis://store:6379/0", *flags])
    assert replica_settings(options.replica_flags()).store_timeout_s == pytest.approx(timeout_s)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--replicas-store=nats://store:4222"], "redis://host:6379/0"),
        (["--replicas-store=redis://"], "no host"),
        (["--replicas-sync-interval=0s"], "--replicas-sync-interval=0s: must be above 0"),
        (["--replicas-sync-interval=1s", "--replicas-lease=2s"], "at least 3 sync intervals"),
        (["--replica-id=a b"], "no whitespace"),
        (["--replicas-store-timeout=10ms"], "at least the sync interval (0.05s)"),
        (["--replicas-store-timeout=1s"], "below the lease (1s)"),
    ],
)
def test_each_mistake_names_the_flag_and_the_fix(flags: list[str], says: str) -> None:
    with pytest.raises(FlagError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_serve_options([*BASE, *flags])
