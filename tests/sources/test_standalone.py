"""Upstream's standalone mode: `--endpoint-selector` + `--endpoint-target-ports` instead of an
InferencePool, sharing the pool's endpoint rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.api import parse_resource
from sluice.sources.files import ManifestDirectorySource
from sluice.sources.state import PoolKey, standalone_pool_manifest


def test_flags_become_a_pool_with_the_same_endpoint_rules(tmp_path: Path) -> None:
    (tmp_path / "pods.yaml").write_text(
        """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: ns, labels: {app: vllm, tier: gpu}}
status: {podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: ns, labels: {app: vllm}}
status: {podIP: 10.0.0.2, conditions: [{type: Ready, status: "True"}]}
"""
    )
    key = PoolKey("standalone", "ns")
    pool = parse_resource(
        standalone_pool_manifest("standalone", "ns", "app=vllm,tier=gpu", "8000,8001")
    )
    source = ManifestDirectorySource(
        tmp_path, key, lambda s: None, static_pools={"ns/standalone": pool}
    )
    source.refresh()
    assert source.state is not None
    assert [e.hostport for e in source.state.endpoints] == ["10.0.0.1:8000", "10.0.0.1:8001"]


@pytest.mark.parametrize(
    ("selector", "ports", "message"),
    [
        ("app", "8000", "is not key=value"),
        ("", "8000", "empty"),
        ("app=x", "", "required with --endpoint-selector"),
        ("app=x", "http", "is not a list of ports"),
    ],
)
def test_bad_standalone_flags_name_the_flag(selector: str, ports: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        standalone_pool_manifest("p", "ns", selector, ports)
