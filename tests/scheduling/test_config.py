"""EndpointPickerConfig: upstream's format unchanged, defaulting, strict errors with lines."""

from __future__ import annotations

import pytest

from sluice.config import load_config, load_sluice_config, parse_duration
from sluice.scheduling.registry import BUILTINS
from sluice.scheduling.scheduler import Scheduler
from sluice.util.located import ConfigError

UPSTREAM_EXAMPLE = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
  parameters: {blockSize: 64, maxPrefixBlocksToMatch: 256, lruCapacityPerServer: 31250}
- type: max-score-picker
  parameters: {maxNumOfEndpoints: 2}
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: max-score-picker}
saturationDetector:
  {queueDepthThreshold: 5, kvCacheUtilThreshold: 0.8, metricsStalenessThreshold: 200ms}
flowControl:
  maxBytes: 1Gi
"""


def test_upstream_example_loads_and_weights_are_normalized() -> None:
    whole = load_sluice_config(UPSTREAM_EXAMPLE, "config.yaml")
    config = whole.picker
    assert config.feature_gates == {"flowControl"}
    assert whole.room.metrics_staleness_s == pytest.approx(0.2)
    assert whole.flow.max_bytes == 2**30
    profile = Scheduler.from_config(config).profiles["default"]
    assert [round(w, 3) for _, w in profile.scorers] == [0.286, 0.286, 0.429]
    assert profile.picker.type_name == "max-score-picker"


def test_defaulting_adds_default_profile_handler_and_picker() -> None:
    config = load_config("plugins:\n- type: queue-scorer\n- type: lora-affinity-scorer\n")
    assert [p.type for p in config.plugins][-2:] == ["single-profile-handler", "max-score-picker"]
    (profile,) = config.profiles
    assert profile.name == "default"
    assert [r.plugin_ref for r in profile.plugins] == [
        "queue-scorer",
        "lora-affinity-scorer",
        "max-score-picker",
    ]
    assert all(r.weight == 1 for r in profile.plugins)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "plugins:\n- type: queue-scorer\n- type: foo-scorer\n",
            "config.yaml:3: plugins[1].type: unknown plugin type 'foo-scorer'; known types: ",
        ),
        (
            "plugins:\n- type: queue-scorer\n  weight: 3\n",
            "config.yaml:3: plugins[0].weight: unknown field",
        ),
        (
            "plugins:\n- type: queue-scorer\n"
            "schedulingProfiles:\n- name: p\n  plugins:\n  - pluginRef: nope\n",
            "config.yaml:6: schedulingProfiles[0].plugins[0].pluginRef: unknown plugin 'nope'",
        ),
        (
            "plugins:\n- type: max-score-picker\n  parameters:\n    maxNumOfEndpoint: 2\n",
            "config.yaml:4: plugins[0].parameters.maxNumOfEndpoint: unknown parameter",
        ),
        ("featureGates: [warpDrive]\n", "config.yaml:1: featureGates[0]: unknown feature gate"),
        ("colour: blue\n", "config.yaml:1: colour: unknown field 'colour'"),
        (
            "plugins:\n- type: queue-scorer\n- type: queue-scorer\n",
            "config.yaml:3: plugins[1].name: duplicate plugin name",
        ),
        (
            "saturationDetector: {kvCacheUtilThreshold: 1.5}\n",
            "config.yaml:1: saturationDetector.kvCacheUtilThreshold",
        ),
    ],
)
def test_strict_errors_name_the_line_and_the_culprit(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(text, "config.yaml")
    assert str(excinfo.value).startswith(expected)


def test_two_profiles_need_a_profile_handler() -> None:
    text = "plugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: a\n- name: b\n"
    with pytest.raises(ConfigError, match="profile handler"):
        load_config(text)


def test_durations_parse_go_style() -> None:
    assert parse_duration("200ms") == pytest.approx(0.2)
    assert parse_duration("1m30s") == 90
    with pytest.raises(ValueError):
        parse_duration("soon")


@pytest.mark.parametrize("plugin", sorted(t for t, cls in BUILTINS.items() if cls.kind != "data"))
def test_every_built_in_plugin_refuses_a_parameter_it_does_not_know(plugin: str) -> None:
    """Each plugin reads its parameters with its own strict model; only the data-layer plugins
    (accepted for upstream's configs, unread) take anything."""
    text = f"plugins:\n- type: {plugin}\n  parameters: {{noSuchParameter: 1}}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(text, "config.yaml")
    assert str(caught.value).startswith(
        "config.yaml:3: plugins[0].parameters.noSuchParameter: unknown parameter 'noSuchParameter'"
    )
