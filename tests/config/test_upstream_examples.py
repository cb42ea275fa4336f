"""llm-d-router v0.10's own examples load unchanged (tests/config/upstream/SOURCES.md), and the
v0.9+ layout's fields are read and do what upstream says."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.config import ConfigError, load_sluice_config
from sluice.sources.manifests import read_manifest_file

UPSTREAM = Path(__file__).parent / "upstream"


@pytest.mark.parametrize("example", sorted(p.name for p in UPSTREAM.glob("[!m]*.yaml")))
def test_upstream_config_example_is_accepted_unchanged(example: str) -> None:
    config = load_sluice_config((UPSTREAM / example).read_text(), example)
    assert config.picker.profiles and config.picker.plugin("max-score-picker")


@pytest.mark.parametrize("example", sorted(p.name for p in UPSTREAM.glob("manifest__*.yaml")))
def test_upstream_objective_manifest_is_accepted_unchanged(example: str) -> None:
    contents = read_manifest_file(UPSTREAM / example)
    assert contents.objectives and not contents.deprecated and not contents.warnings


V09 = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
featureGates: ["flowControl", "dataLayer", "haPopulateNonLeaderDatastore=false"]
plugins:
- type: queue-scorer
- {name: detector, type: concurrency-detector, parameters: {maxConcurrency: 12}}
- {name: rr, type: round-robin-fairness-policy}
- type: edf-ordering-policy
- type: static-usage-limit-policy
- type: openai-parser
- type: metrics-data-source
- type: core-metrics-extractor
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
requestHandler:
  parsers:
  - pluginRef: openai-parser
dataLayer:
  injectDefaults: true
  sources:
  - pluginRef: metrics-data-source
    extractors:
    - pluginRef: core-metrics-extractor
flowControl:
  saturationDetector: {pluginRef: detector}
  usageLimitPolicyPluginRef: static-usage-limit-policy
  enableEviction: true
  noEndpointRequestTTL: 30s
  defaultPriorityBand: {fairnessPolicyRef: rr}
  defaultNegativePriorityBand: {maxRequests: 10, orderingPolicyRef: edf-ordering-policy}
  priorityBands:
  - {priority: 5, maxRequests: 0}
"""


def test_the_v09_layout_is_read_and_wired() -> None:
    config = load_sluice_config(V09, "v09.yaml")
    assert config.picker.feature_gates == {"flowControl", "dataLayer"}
    assert config.room.max_in_flight_requests == 12  # concurrency-detector's maxConcurrency
    flow = config.flow
    assert flow.enable_eviction and flow.no_endpoint_request_ttl_s == 30.0
    assert flow.default_request_ttl_s == 60.0  # upstream's default in this layout
    assert flow.band(0).fairness == "round-robin"
    assert (flow.band(-1).max_requests, flow.band(-1).ordering) == (10, "edf")
    assert flow.band(5).max_requests == 5000  # 0 = upstream's default
    assert flow.band(2).max_bytes == 10**9


def test_the_gie_layout_keeps_sluices_defaults() -> None:
    flow = load_sluice_config("flowControl: {priorityBands: [{priority: 5}]}\n").flow
    assert flow.default_request_ttl_s is None
    assert (flow.band(5).max_requests, flow.band(5).fairness) == (0, "token-fair")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: llm-d.ai/v1alpha1\nplugins:\n- type: queue-scorer\n"
            "- type: label-selector-filter\n",
            "x.yaml:4: plugins[1].type: upstream plugin 'label-selector-filter' is not "
            "implemented by Sluice; instead use",
        ),
        (
            "flowControl:\n  saturationDetector: {pluginRef: nope}\n",
            "x.yaml:2: flowControl.saturationDetector.pluginRef: 'nope' is not a saturation",
        ),
        (
            "flowControl:\n  priorityBands:\n  - priority: 1\n    orderingPolicyRef: lifo\n",
            "x.yaml:4: flowControl.priorityBands[0].orderingPolicyRef: unknown policy 'lifo'",
        ),
        ("requestHandler:\n  parserz: []\n", "x.yaml:2: requestHandler.parserz: unknown field"),
        ("featureGates: [flowControl=maybe]\n", "x.yaml:1: featureGates[0]: 'flowControl=maybe'"),
    ],
)
def test_v09_mistakes_name_file_line_and_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_sluice_config(text, "x.yaml")
    assert str(caught.value).startswith(message)
