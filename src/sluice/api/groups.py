"""The API groups Sluice reads InferenceObjective and InferenceModelRewrite from.

`llm-d.ai` is where llm-d-router (the Endpoint Picker's home since mid-2026) serves them;
`inference.networking.x-k8s.io` is Gateway API Inference Extension v1.3's group, deprecated but
still installed in many clusters. Both are `v1alpha2` with the same fields, except that
`llm-d.ai` declares the objective's `priority` as a 32-bit integer."""

from __future__ import annotations

LLMD_GROUP = "llm-d.ai"
LEGACY_GROUP = "inference.networking.x-k8s.io"
VERSION = "v1alpha2"

# Preferred first: when a cluster serves a kind in both groups, only the first is read.
OBJECTIVE_GROUPS = (LLMD_GROUP, LEGACY_GROUP)

POOL_GROUP = "inference.networking.k8s.io"


def is_deprecated(group: str) -> bool:
    """Whether objects of `group` should carry a migration warning."""
    return group == LEGACY_GROUP


def deprecation_hint(kind: str) -> str:
    """What to tell a user whose `kind` lives in the legacy group."""
    return (
        f"apiVersion {LEGACY_GROUP}/{VERSION} {kind} is deprecated; "
        f"use apiVersion {LLMD_GROUP}/{VERSION} (same fields)"
    )
