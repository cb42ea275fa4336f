"""The `--replicas-*` flags: each mistake names the flag and the fix; accepted flags mean what
they say."""

from __future__ import annotations

import pytest

from sluice.cli.flags import FlagError
from sluice.cli.serve_options import parse_serve_options
from sluice.replicas.settings import replica_settings

BASE = ["--pool-name=pool"]


def test_off_by_default_and_on_with_a_store() -> None:
    assert not replica_settings(parse_serve_options(BASE).replica_flags()).enabled
    options = parse_serve_options(
        [*BASE, "--replicas-store=redis://store:6379/0", "--replica-id=sluice-0"]
    )
    settings = replica_settings(options.replica_flags())
    assert settings.enabled and settings.replica_id == "sluice-0"
    assert settings.sync_interval_s == 0.05 and settings.lease_s == 1.0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--replicas-store=nats://store:4222"], "redis://host:6379/0"),
        (["--replicas-store=redis://"], "no host"),
        (["--replicas-sync-interval=0s"], "--replicas-sync-interval=0s: must be above 0"),
        (["--replicas-sync-interval=1s", "--replicas-lease=2s"], "at least 3 sync intervals"),
        (["--replica-id=a b"], "no whitespace"),
    ],
)
def test_each_mistake_names_the_flag_and_the_fix(flags: list[str], says: str) -> None:
    with pytest.raises(FlagError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_serve_options([*BASE, *flags])
