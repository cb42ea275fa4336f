"""Manifest files in either API group: `llm-d.ai/v1alpha2` (llm-d-router's) and the deprecated
`inference.networking.x-k8s.io/v1alpha2` (GIE v1.3's) both load; a legacy object is noted as
deprecated, and where both groups define the same namespace/name the `llm-d.ai` one is in force.
llm-d-router v0.10's own example manifests load unchanged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sluice.api import InferenceObjective, LegacyInferenceObjective
from sluice.sources.files import ManifestDirectorySource
from sluice.sources.manifests import ManifestError, read_manifest_file
from sluice.sources.state import PoolKey

EXAMPLES = Path(__file__).parent / "examples" / "llm-d-router-v0.10"
LLMD, LEGACY = "llm-d.ai/v1alpha2", "inference.networking.x-k8s.io/v1alpha2"
KEY = PoolKey("pool", "default")
POOL = """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: pool}
spec:
  selector: {matchLabels: {app: sim}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: sluice, port: {number: 9002}}
"""


def objective(api_version: str, name: str, priority: int) -> str:
    return f"""
apiVersion: {api_version}
kind: InferenceObjective
metadata: {{name: {name}}}
spec: {{poolRef: {{name: pool}}, priority: {priority}}}
"""


def rewrite(api_version: str, name: str, target: str) -> str:
    return f"""
apiVersion: {api_version}
kind: InferenceModelRewrite
metadata: {{name: {name}}}
spec:
  poolRef: {{name: pool}}
  rules: [{{targets: [{{modelRewrite: {target}}}]}}]
"""


def source(directory: Path) -> ManifestDirectorySource:
    loaded = ManifestDirectorySource(directory, KEY, lambda state: None)
    loaded.refresh()
    return loaded


@pytest.mark.parametrize("api_version", [LLMD, LEGACY])
def test_objectives_and_rewrites_load_from_either_group(tmp_path: Path, api_version: str) -> None:
    (tmp_path / "pool.yaml").write_text(POOL)
    (tmp_path / "objects.yaml").write_text(
        objective(api_version, "chat", 7) + "---" + rewrite(api_version, "canary", "llama-v2")
    )
    state = source(tmp_path).state
    assert state is not None
    assert state.priorities.get("chat", 0) == 7
    (loaded,) = state.rewrites.values()
    assert loaded.api_version == api_version
    assert loaded.spec.rules[0].targets[0].model_rewrite == "llama-v2"


def test_a_legacy_manifest_loads_with_a_deprecation_warning_naming_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = POOL + "---" + objective(LEGACY, "chat", 1)
    (tmp_path / "old.yaml").write_text(text)
    line = text.splitlines().index(f"apiVersion: {LEGACY}") + 1
    contents = read_manifest_file(tmp_path / "old.yaml")
    (note,) = contents.deprecated
    assert str(note) == (
        f"{tmp_path / 'old.yaml'}:{line}: apiVersion {LEGACY} InferenceObjective is deprecated; "
        f"use apiVersion {LLMD} (same fields)"
    )
    assert isinstance(contents.objectives["default/chat"], LegacyInferenceObjective)

    caplog.set_level(logging.WARNING, logger="sluice")
    source(tmp_path)
    logged = [getattr(r, "fields", {}).get("problem") for r in caplog.records]
    assert str(note) in logged
    (tmp_path / "old.yaml").write_text(POOL + "---" + objective(LLMD, "chat", 1))
    assert read_manifest_file(tmp_path / "old.yaml").deprecated == []


@pytest.mark.parametrize("llm_d_file", ["a.yaml", "z.yaml"])
def test_where_both_groups_name_the_same_object_the_llm_d_one_is_in_force(
    tmp_path: Path, llm_d_file: str
) -> None:
    """Whatever the file order (files are merged in name order)."""
    legacy_file = "z.yaml" if llm_d_file == "a.yaml" else "a.yaml"
    (tmp_path / "pool.yaml").write_text(POOL)
    (tmp_path / llm_d_file).write_text(objective(LLMD, "chat", 10))
    (tmp_path / legacy_file).write_text(
        objective(LEGACY, "chat", -5) + "---" + objective(LEGACY, "old", 2)
    )
    state = source(tmp_path).state
    assert state is not None
    assert state.priorities.get("chat", 0) == 10
    assert (
        state.priorities.get("old", 0) == 2
    )  # a legacy object no llm-d.ai one replaces still counts
    assert type(state.objective("chat")) is InferenceObjective


def test_in_one_file_both_groups_may_name_the_same_object_but_one_group_twice_is_an_error(
    tmp_path: Path,
) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(objective(LEGACY, "chat", -5) + "---" + objective(LLMD, "chat", 10))
    assert read_manifest_file(both).objectives["default/chat"].spec.priority == 10
    twice = tmp_path / "twice.yaml"
    twice.write_text(objective(LLMD, "chat", 1) + "---" + objective(LLMD, "chat", 2))
    with pytest.raises(ManifestError, match="duplicate InferenceObjective default/chat"):
        read_manifest_file(twice)


def test_llm_d_priorities_are_int32_as_its_crd_declares(tmp_path: Path) -> None:
    big = 2**31
    (tmp_path / "llmd.yaml").write_text(objective(LLMD, "huge", big))
    with pytest.raises(ManifestError) as error:
        read_manifest_file(tmp_path / "llmd.yaml")
    assert str(error.value) == (
        f"{tmp_path / 'llmd.yaml'}:5: InferenceObjective default/huge: spec.priority: "
        f"Invalid value: {big}: must be of type int32"
    )
    (tmp_path / "legacy.yaml").write_text(objective(LEGACY, "huge", big))
    assert (
        read_manifest_file(tmp_path / "legacy.yaml").objectives["default/huge"].spec.priority == big
    )


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_llm_d_router_v0_10_example_manifests_load_unchanged(example: str) -> None:
    path = EXAMPLES / example
    contents = read_manifest_file(path)
    documents = path.read_text().count("kind: InferenceObjective")
    assert len(contents.objectives) == documents > 0
    assert all(type(o) is InferenceObjective for o in contents.objectives.values())
    assert contents.deprecated == []
    # Fields the CRD does not have are reported as Kubernetes would prune them, never fatal.
    assert {w.message.split(": ")[1] for w in contents.warnings} <= {"spec.modelName"}
