"""GIE v1.3's own examples still load (tests/config/gie/SOURCES.md): its guides' configs, the
Helm chart's default, and its InferenceObjective / InferenceModelRewrite manifests, which are in
the legacy group and so load with its deprecation warning, one per object."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.config import ConfigError, load_sluice_config
from sluice.room import RoomSettings
from sluice.sources.manifests import ManifestError, read_manifest_file

GIE = Path(__file__).parent / "gie"
DEPRECATED = "apiVersion inference.networking.x-k8s.io/v1alpha2 Inference"


def test_the_chart_default_keeps_its_plugins_and_weights() -> None:
    config = load_sluice_config(
        (GIE / "charts__inferencepool__templates__epp-config.yaml__rendered.yaml").read_text()
    )
    [profile] = config.picker.profiles
    weights = {ref.plugin_ref: ref.weight for ref in profile.plugins}
    assert weights == {
        "queue-scorer": 2,
        "kv-cache-utilization-scorer": 2,
        "prefix-cache-scorer": 3,
        "max-score-picker": 1,  # injected, as upstream
    }


def test_the_config_text_guide_prefix_example_loads_with_its_parameters() -> None:
    example = "guides__epp-configuration__config-text.md__115.yaml"
    config = load_sluice_config((GIE / example).read_text(), example)
    [profile] = config.picker.profiles
    assert [(r.plugin_ref, r.weight) for r in profile.plugins] == [
        ("prefix-cache-scorer", 50),
        ("max-score-picker", 1),
    ]
    assert config.picker.plugin("prefix-cache-scorer").parameters == {
        "blockSize": 5,
        "maxPrefixBlocksToMatch": 256,
        "lruCapacityPerServer": 31250,
    }


def test_the_config_text_guide_saturation_detector_example_sets_the_thresholds() -> None:
    example = "guides__epp-configuration__config-text.md__310.yaml"
    room = load_sluice_config((GIE / example).read_text(), example).room
    assert (room.queue_depth, room.kv_cache_util, room.metrics_staleness_s) == (8, 0.75, 0.15)
    assert room.queue_depth != RoomSettings().queue_depth


def test_the_config_text_guide_data_section_is_accepted() -> None:
    example = "guides__epp-configuration__config-text.md__337.yaml"
    assert load_sluice_config((GIE / example).read_text(), example).picker.profiles


# file -> (objectives, rewrites, warnings about fields the CRD does not have)
MANIFESTS = {
    "manifest__inferenceobjective.yaml": (3, 0, 0),
    "manifest__regression-testing__inferenceobjective.yaml": (16, 0, 0),
    "manifest__api-types__inferencemodelrewrite.md__33.yaml": (0, 1, 0),
    "manifest__guides__adapter-rollout.md__58.yaml": (0, 1, 0),
    "manifest__guides__adapter-rollout.md__134.yaml": (0, 1, 0),
    "manifest__guides__ga-migration.md__154.yaml": (2, 0, 0),
    "manifest__testdata__inferencepool-with-model-hermetic.yaml": (4, 1, 3),
}


def test_every_gie_manifest_kept_is_checked() -> None:
    assert sorted(p.name for p in GIE.glob("manifest__*.yaml")) == sorted(MANIFESTS)


@pytest.mark.parametrize("example", sorted(MANIFESTS))
def test_a_gie_manifest_loads_with_one_deprecation_warning_per_object(example: str) -> None:
    objectives, rewrites, pruned = MANIFESTS[example]
    contents = read_manifest_file(GIE / example)
    assert (len(contents.objectives), len(contents.rewrites)) == (objectives, rewrites)
    assert len(contents.deprecated) == objectives + rewrites
    assert all(p.message.startswith(DEPRECATED) for p in contents.deprecated)
    assert len(contents.warnings) == pruned
    assert all("spec.targetModels: unknown field" in p.message for p in contents.warnings)


# Refused as Kubernetes or GIE's own strict loader refuses them: a typo in the guide, and
# InferenceModelRewrites written under a group/version that never served that kind.
REFUSED = {
    "guides__epp-configuration__config-text.md__201.yaml": (
        "16: schedulingProfiles[0].-pluginRef: unknown field '-pluginRef'"
    ),
    "manifest__api-types__inferencemodelrewrite.md__55.yaml": (
        "2: InferenceModelRewrite default/generic-fallback: kind: Unsupported value: "
        '"InferenceModelRewrite" (apiVersion "inference.networking.k8s.io/v1alpha2")'
    ),
    "manifest__api-types__inferencemodelrewrite.md__74.yaml": (
        "2: InferenceModelRewrite default/food-review-canary: kind: Unsupported value: "
        '"InferenceModelRewrite" (apiVersion "inference.networking.k8s.io/v1alpha2")'
    ),
    "manifest__proposals__1816-inferenceomodelrewrite__README.md__212.yaml": (
        "2: InferenceModelRewrite default/food-review-canary-rollout: kind: Unsupported value: "
        '"InferenceModelRewrite" (apiVersion "inference.networking.x-k8s.io/v1alpha1")'
    ),
}


def test_every_refused_gie_example_kept_is_checked() -> None:
    assert sorted(p.name for p in (GIE / "refused").glob("*.yaml")) == sorted(REFUSED)


@pytest.mark.parametrize("example", sorted(REFUSED))
def test_a_refused_gie_example_says_file_line_and_why(example: str) -> None:
    path = GIE / "refused" / example
    with pytest.raises((ConfigError, ManifestError)) as caught:
        if example.startswith("manifest__"):
            read_manifest_file(path)
        else:
            load_sluice_config(path.read_text(), example)
    name = str(path) if example.startswith("manifest__") else example
    assert str(caught.value).startswith(f"{name}:{REFUSED[example]}")
