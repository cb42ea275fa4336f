"""The official CRDs, keyed by (API group, kind):

* GIE v1.3.0 (InferencePool and the legacy `inference.networking.x-k8s.io` group), read where the
  project keeps them: `../shared/spec/crds` beside the repository (never copied into it);
* llm-d-router v0.10.0 (the `llm-d.ai` group), kept as test data in `tests/api/crds/` (each file
  names its source)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT.parent / "shared" / "spec" / "crds"
LLMD_CRD_DIR = Path(__file__).resolve().parent / "crds"

LLMD = "llm-d.ai"
LEGACY = "inference.networking.x-k8s.io"
POOL = "inference.networking.k8s.io"
# Every (group, kind) Sluice reads, in the order `sluice crds` prints them.
RESOURCES = [
    (POOL, "InferencePool"),
    (LLMD, "InferenceObjective"),
    (LLMD, "InferenceModelRewrite"),
    (LEGACY, "InferenceObjective"),
    (LEGACY, "InferenceModelRewrite"),
]
GroupKind = tuple[str, str]


def _resource(kind: str | GroupKind) -> GroupKind:
    """A bare kind means the GIE v1.3 one (what the older tests name)."""
    if isinstance(kind, tuple):
        return kind
    return (POOL if kind == "InferencePool" else LEGACY, kind)


@cache
def official_crds() -> dict[GroupKind, dict[str, Any]]:
    """(group, kind) → CustomResourceDefinition, skipping the test if the shared specs are
    absent."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        pytest.skip(
            f"official CRDs not found in {CRD_DIR} (expected a clone with shared/ beside it)"
        )
    files += sorted(LLMD_CRD_DIR.glob("*.yaml"))
    crds = [yaml.safe_load(f.read_text()) for f in files]
    return {(crd["spec"]["group"], crd["spec"]["names"]["kind"]): crd for crd in crds}


def official_crd(kind: str | GroupKind) -> dict[str, Any]:
    return official_crds()[_resource(kind)]


def official_schema(kind: str | GroupKind) -> dict[str, Any]:
    (version,) = official_crd(kind)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def api_version(kind: str | GroupKind) -> str:
    crd = official_crd(kind)
    return f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"


def kind_of(kind: str | GroupKind) -> str:
    return _resource(kind)[1]
