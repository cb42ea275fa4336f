"""The manifest-directory source: a directory of the same YAML you would `kubectl apply`,
hot-reloaded, where a broken file never costs you the last good state."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from sluice.sources.files import ManifestDirectorySource
from sluice.sources.manifests import ManifestError, read_manifest_file
from sluice.sources.state import PoolKey, PoolState

QUICKSTART = Path(__file__).resolve().parents[2] / "src" / "sluice" / "quickstart"
KEY = PoolKey(name="quickstart", namespace="default")


@pytest.fixture
def resources(tmp_path: Path) -> Path:
    target = tmp_path / "resources"
    shutil.copytree(QUICKSTART, target)
    return target


def load(path: Path) -> tuple[ManifestDirectorySource, list[PoolState]]:
    published: list[PoolState] = []
    source = ManifestDirectorySource(path, KEY, published.append, poll_interval=0.05)
    source.refresh()
    return source, published


def test_the_quickstart_loads_four_endpoints_and_three_priorities(resources: Path) -> None:
    source, _ = load(resources)
    state = source.state
    assert state is not None and state.loaded
    assert [e.hostport for e in state.endpoints] == [
        "127.0.0.1:8001",
        "127.0.0.1:8002",
        "127.0.0.1:8003",
        "127.0.0.1:8004",
    ]
    assert state.endpoints[0].name == "sim-engines-rank-0"
    assert state.priorities.get("interactive", 0) == 10
    assert state.priorities.get("standard", 0) == 0
    assert state.priorities.get("batch", 0) == -1
    assert state.priorities.get("no-such-objective", 0) == 0


def test_only_ready_matching_not_deleting_pods_become_endpoints(resources: Path) -> None:
    (resources / "more-pods.yaml").write_text(
        """
apiVersion: v1
kind: Pod
metadata: {name: not-ready, namespace: default, labels: {app: sim-engine}}
status: {podIP: 10.0.0.2, conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other-app, namespace: default, labels: {app: web}}
status: {podIP: 10.0.0.3, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other-ns, namespace: elsewhere, labels: {app: sim-engine}}
status: {podIP: 10.0.0.4, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: leaving
  namespace: default
  labels: {app: sim-engine}
  deletionTimestamp: "2026-01-01T00:00:00Z"
status: {podIP: 10.0.0.5, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ready-one, namespace: default, labels: {app: sim-engine, extra: x}}
status: {podIP: 10.0.0.6, conditions: [{type: Ready, status: "True"}]}
"""
    )
    source, _ = load(resources)
    assert source.state is not None
    addresses = {e.address for e in source.state.endpoints}
    assert addresses == {"127.0.0.1", "10.0.0.6"}
    assert len(source.state.endpoints) == 8  # two pods × four target ports


def test_objectives_of_other_pools_or_namespaces_are_ignored(resources: Path) -> None:
    (resources / "foreign.yaml").write_text(
        """
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: foreign, namespace: default}
spec: {priority: 99, poolRef: {name: another-pool}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: elsewhere, namespace: other}
spec: {priority: 99, poolRef: {name: quickstart}}
"""
    )
    source, _ = load(resources)
    assert source.state is not None
    assert set(source.state.objectives) == {
        "default/interactive",
        "default/standard",
        "default/batch",
    }
    assert source.state.priorities.get("foreign", 0) == 0


async def test_an_edit_on_disk_takes_effect_within_one_second(resources: Path) -> None:
    source, published = load(resources)
    task = asyncio.create_task(source.run())
    try:
        objectives = resources / "objectives.yaml"
        objectives.write_text(objectives.read_text().replace("priority: 10", "priority: 42"))
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            if source.state is not None and source.state.priorities.get("interactive", 0) == 42:
                break
            await asyncio.sleep(0.02)
        assert source.state is not None
        assert source.state.priorities.get("interactive", 0) == 42
        assert time.monotonic() - start < 1.0
        assert len(published) == 2
    finally:
        task.cancel()


def test_a_broken_manifest_is_reported_with_file_and_line_and_the_old_state_stays(
    resources: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, published = load(resources)
    before = source.state
    pool = resources / "pool.yaml"
    text = pool.read_text()
    pool.write_text(text.replace("- number: 8003", "- number: 80003"))
    source.refresh()
    assert source.state == before
    assert len(published) == 1
    [problem] = source.problems
    bad_line = text.splitlines().index("  - number: 8003") + 1
    assert problem.file == str(pool)
    assert problem.line == bad_line
    assert "spec.targetPorts[2].number" in problem.message
    assert "65535" in problem.message
    logged = [getattr(r, "fields", {}).get("problem", "") for r in caplog.records]
    assert any(f"pool.yaml:{bad_line}: " in line for line in logged)
    # Fixing the file clears the problem and applies the new content.
    pool.write_text(text.replace("  - number: 8004\n", ""))
    source.refresh()
    assert source.problems == []
    assert source.state is not None and len(source.state.endpoints) == 3


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x\n")
    with pytest.raises(ManifestError) as info:
        read_manifest_file(bad)
    [problem] = info.value.problems
    assert problem.file == str(bad) and problem.line >= 3
    assert "invalid YAML" in problem.message


def test_a_missing_required_field_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "objective.yaml"
    bad.write_text(
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
        "kind: InferenceObjective\n"
        "metadata: {name: o, namespace: default}\n"
        "spec:\n"
        "  priority: 3\n"
        "  poolRef: {}\n"
    )
    with pytest.raises(ManifestError) as info:
        read_manifest_file(bad)
    [problem] = info.value.problems
    assert problem.line == 6
    assert "spec.poolRef.name: Required value" in problem.message


def test_deleting_a_file_removes_its_objects(resources: Path) -> None:
    source, _ = load(resources)
    (resources / "objectives.yaml").unlink()
    source.refresh()
    assert source.state is not None and dict(source.state.objectives) == {}


def test_unrelated_kinds_are_skipped(resources: Path) -> None:
    (resources / "service.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n"
    )
    source, _ = load(resources)
    assert source.problems == []
    assert source.state is not None and len(source.state.endpoints) == 4


def test_objectives_and_rewrites_without_spec_are_accepted_and_ignored(resources: Path) -> None:
    # The official schemas do not require `spec` on these two kinds; such objects refer to no
    # pool, so they must neither crash Sluice nor count.
    (resources / "specless.yaml").write_text(
        """
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: empty, namespace: default}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: empty, namespace: default}
"""
    )
    source, _ = load(resources)
    assert source.problems == []
    assert source.state is not None
    assert "default/empty" not in source.state.objectives
    assert source.state.priorities.get("empty", 0) == 0


def test_a_misspelled_field_is_reported_with_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "objective.yaml"
    manifest.write_text(
        "apiVersion: inference.networking.x-k8s.io/v1alpha2\n"
        "kind: InferenceObjective\n"
        "metadata: {name: o, namespace: default}\n"
        "spec:\n"
        "  priorty: 3\n"
        "  poolRef: {name: quickstart}\n"
    )
    contents = read_manifest_file(manifest)
    [warning] = contents.warnings
    assert warning.line == 5
    assert "spec.priorty: unknown field" in warning.message
    assert contents.objectives["default/o"].spec.priority is None


# Issue #15 item 10: configuration that was silently accepted.


def _fields(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict]]:
    return [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]


def test_a_duplicate_objective_in_another_file_is_an_error_naming_both_files(
    resources: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to win silently (the log said only "manifest loaded")."""
    (resources / "zz-duplicate.yaml").write_text(
        """
apiVersion: llm-d.ai/v1alpha2
kind: InferenceObjective
metadata: {name: interactive, namespace: default}
spec: {priority: -5, poolRef: {name: quickstart}}
"""
    )
    source, _ = load(resources)
    assert source.state is not None
    assert source.state.priorities["interactive"] == 10  # the first file's stays in force
    [(message, fields)] = [(m, f) for m, f in _fields(caplog) if m.startswith("duplicate")]
    assert message == "duplicate InferenceObjective default/interactive"
    assert fields["kept"] == str(resources / "objectives.yaml")
    assert fields["ignored"] == str(resources / "zz-duplicate.yaml")
    assert fields["fix"] == "keep it in one file"


def test_an_objective_for_another_pool_is_an_explicit_logged_decision(
    resources: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (resources / "foreign.yaml").write_text(
        """
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: foreign, namespace: default}
spec: {priority: 99, poolRef: {name: another-pool}}
"""
    )
    with caplog.at_level("INFO"):
        load(resources)
    decisions = [f for m, f in _fields(caplog) if "poolRef names another pool" in m]
    assert decisions == [
        {
            "objective": "default/foreign",
            "file": str(resources / "foreign.yaml"),
            "pool_ref": "another-pool",
            "this_pool": "quickstart",
        }
    ]


@pytest.mark.parametrize("broken", ["", "\n# nothing left\n", "half"])
def test_an_empty_or_truncated_pool_file_is_an_error_and_the_pool_stays(
    resources: Path, broken: str
) -> None:
    source, published = load(resources)
    before = source.state
    pool = resources / "pool.yaml"
    text = pool.read_text()
    pool.write_text(text[: len(text) // 2] if broken == "half" else broken)
    source.refresh()
    assert source.state == before  # still loaded, same endpoints
    assert len(published) == 1
    [problem] = source.problems
    assert problem.file == str(pool)
    if broken != "half":
        assert "empty" in problem.message and "delete the file" in problem.message
    pool.unlink()  # deleting it is how to remove the pool
    source.refresh()
    assert source.state is not None and not source.state.loaded
