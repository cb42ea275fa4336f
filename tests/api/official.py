"""The official v1.3.0 CRDs, read where the project keeps them: `../shared/spec/crds` beside the
repository (never copied into it)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT.parent / "shared" / "spec" / "crds"


@cache
def official_crds() -> dict[str, dict[str, Any]]:
    """kind → CustomResourceDefinition, skipping the test if the shared specs are absent."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        pytest.skip(
            f"official CRDs not found in {CRD_DIR} (expected a clone with shared/ beside it)"
        )
    crds = [yaml.safe_load(f.read_text()) for f in files]
    return {crd["spec"]["names"]["kind"]: crd for crd in crds}


def official_schema(kind: str) -> dict[str, Any]:
    (version,) = official_crds()[kind]["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def api_version(kind: str) -> str:
    crd = official_crds()[kind]
    return f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
