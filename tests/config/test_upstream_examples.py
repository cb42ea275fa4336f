"""llm-d-router v0.10's own examples load unchanged (tests/config/upstream/SOURCES.md), and the
v0.9+ layout's fields are read and do what upstream says."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from sluice.config import ConfigError, load_sluice_config
from sluice.config.plugin_types import SLUICE_INSTEAD
from sluice.sources.manifests import read_manifest_file

UPSTREAM = Path(__file__).parent / "upstream"
REFUSED = UPSTREAM / "refused"


@pytest.mark.parametrize("example", sorted(p.name for p in UPSTREAM.glob("[!m]*.yaml")))
def test_upstream_config_example_is_accepted_unchanged(example: str) -> None:
    config = load_sluice_config((UPSTREAM / example).read_text(), example)
    assert config.picker.profiles and config.picker.plugin("max-score-picker")


# The usage-limit examples, and the policy each puts in force (what they do: tests/director/
# test_usage_limit.py; the curve: tests/room/test_ceiling.py).
USAGE_LIMITS = {
    "flowcontrol__usagelimits__README.md__16.yaml": ("static", "threshold", "threshold"),
    "flowcontrol__usagelimits__priorityholdback__README.md__57.yaml": (
        "rank",
        "minCeiling",
        "maxCeiling",
    ),
}


@pytest.mark.parametrize("example", sorted(USAGE_LIMITS))
def test_an_upstream_usage_limit_example_puts_its_ceilings_in_force(example: str) -> None:
    text = (UPSTREAM / example).read_text()
    params = yaml.safe_load(text)["plugins"][0]["parameters"]
    domain, low, high = USAGE_LIMITS[example]
    limit = load_sluice_config(text, example).room.usage_limit
    assert limit is not None
    assert (limit.domain, limit.min_ceiling, limit.max_ceiling) == (
        domain,
        params[low],
        params[high],
    )


# What each manifest file holds and what loading it says: llm-d.ai objects load silently; the
# probabilistic-admitter guide's objectives carry `spec.modelName`, a field the CRD does not
# have (Kubernetes prunes it), and upstream's hermetic test manifest mixes in legacy-group ones.
MANIFESTS = {
    "manifest__inferenceobjective.yaml": (3, 0, [], []),
    "manifest__regression-testing__inferenceobjective.yaml": (16, 0, [], []),
    "manifest__requestcontrol__admitter__probabilisticadmitter__README.md__102.yaml": (
        1,
        0,
        [],
        [(7, "InferenceObjective default/batch-workload: spec.modelName: unknown field")],
    ),
    "manifest__requestcontrol__admitter__probabilisticadmitter__README.md__117.yaml": (
        1,
        0,
        [],
        [(7, "InferenceObjective default/interactive-workload: spec.modelName: unknown field")],
    ),
    "manifest__testdata__inferencepool-with-model-hermetic.yaml": (
        6,
        1,
        [(43, "apiVersion inference.networking.x-k8s.io/v1alpha2 InferenceObjective is")],
        [
            (line, f"InferenceObjective default/{name}: spec.targetModels: unknown field")
            for line, name in (
                (27, "sql-lora"),
                (39, "sql-lora-sheddable"),
                (51, "sql-lora-sheddable-legacy"),
                (64, "my-model"),
            )
        ],
    ),
}


def test_every_manifest_example_kept_is_checked() -> None:
    assert sorted(p.name for p in UPSTREAM.glob("manifest__*.yaml")) == sorted(MANIFESTS)


@pytest.mark.parametrize("example", sorted(MANIFESTS))
def test_upstream_objective_manifest_is_accepted_unchanged(example: str) -> None:
    objectives, rewrites, deprecated, warnings = MANIFESTS[example]
    contents = read_manifest_file(UPSTREAM / example)
    assert (len(contents.objectives), len(contents.rewrites)) == (objectives, rewrites)
    said = [(p.line, p.message) for p in contents.deprecated]
    assert [(line, m[: len(text)]) for (line, m), (_, text) in zip(said, deprecated)] == deprecated
    assert len(said) == len(deprecated)
    warned = [(p.line, p.message) for p in contents.warnings]
    assert [(line, m[: len(text)]) for (line, m), (_, text) in zip(warned, warnings)] == warnings
    assert len(warned) == len(warnings)


# Each refused example (tests/config/upstream/refused, verbatim): the line of the first plugin
# Sluice lacks, and that plugin's type. The error names both and what Sluice offers instead.
LACKING = {
    "datalayer__discovery__file__README.md__67.yaml": (2, "file-discovery"),
    "datalayer__extractor__dcgm__README.md__44.yaml": (4, "dcgm-data-source"),
    "datalayer__source__dcgm__README.md__58.yaml": (4, "dcgm-data-source"),
    "datalayer__source__models__README.md__53.yaml": (4, "models-data-source"),
    "datalayer__source__notifications__README.md__29.yaml": (2, "k8s-notification-source"),
    "datalayer__source__notifications__README.md__47.yaml": (2, "endpoint-notification-source"),
    "deploy__dp-epp-config.yaml": (7, "decode-filter"),
    "deploy__epp-burst-prefix-cache-config.yaml": (10, "token-producer"),
    "deploy__epp-config.yaml": (7, "decode-filter"),
    "deploy__epp-estimate-prefix-cache-config.yaml": (7, "decode-filter"),
    "deploy__epp-mm-embeddings-cache-config.yaml": (5, "token-producer"),
    "deploy__epp-precise-prefix-cache-config.yaml": (6, "token-producer"),
    "deploy__pd-epp-config.yaml": (5, "approx-prefix-cache-producer"),
    "deploy__pd-topology-epp-config.yaml": (8, "approx-prefix-cache-producer"),
    "deploy__probabilistic-admitter-epp-config.yaml": (15, "probabilistic-admitter"),
    "deploy__sim-e-p-d-epp-config.yaml": (6, "encode-filter"),
    "deploy__sim-e-pd-epp-config.yaml": (6, "encode-filter"),
    "deploy__sim-epp-config.yaml": (6, "approx-prefix-cache-producer"),
    "deploy__sim-epp-gpu-config.yaml": (6, "dcgm-data-source"),
    "deploy__sim-epp-kvcache-config.yaml": (6, "token-producer"),
    "deploy__sim-epp-no-hit-lru.yaml": (6, "precise-prefix-cache-producer"),
    "deploy__sim-epp-tokenizer-vllm-http-config.yaml": (8, "token-producer"),
    "deploy__sim-pd-epp-config.yaml": (6, "approx-prefix-cache-producer"),
    "deploy__sim-program-aware-config.yaml": (4, "program-aware-fairness"),
    "deploy__soft-reflective-ceiling-epp-config.yaml": (15, "soft-reflective-ceiling-policy"),
    "docs__architecture.md__170.yaml": (4, "precise-prefix-cache-producer"),
    "docs__create_new_filter.md__182.yaml": (4, "label-selector-filter"),
    "docs__disaggregation.md__259.yaml": (5, "label-selector-filter"),
    "docs__disaggregation.md__315.yaml": (5, "label-selector-filter"),
    "docs__discovery.md__153.yaml": (3, "file-discovery"),
    "docs__discovery.md__361.yaml": (3, "file-discovery"),
    "flowcontrol__fairness__program-aware__README.md__37.yaml": (2, "program-aware-fairness"),
    "flowcontrol__usagelimits__softreflectiveceiling__README.md__51.yaml": (
        2,
        "soft-reflective-ceiling-policy",
    ),
    "plugins__README.md__41.yaml": (4, "multicluster-file-discovery"),
    "requestcontrol__admitter__latencyslo__README.md__41.yaml": (2, "latency-slo-admitter"),
    "requestcontrol__admitter__probabilisticadmitter__README.md__66.yaml": (
        4,
        "probabilistic-admitter",
    ),
    "requestcontrol__dataproducer__approximateprefix__README.md__26.yaml": (
        2,
        "approx-prefix-cache-producer",
    ),
    "requestcontrol__dataproducer__approximateprefix__README.md__35.yaml": (
        3,
        "approx-prefix-cache-producer",
    ),
    "requestcontrol__dataproducer__inflightload__README.md__52.yaml": (
        2,
        "inflight-load-producer",
    ),
    "requestcontrol__dataproducer__multimodal__README.md__74.yaml": (
        2,
        "mm-embeddings-cache-producer",
    ),
    "requestcontrol__dataproducer__multimodal__README.md__91.yaml": (2, "token-producer"),
    "requestcontrol__dataproducer__p2psource__README.md__18.yaml": (
        2,
        "precise-prefix-cache-producer",
    ),
    "requestcontrol__dataproducer__sessionid__README.md__19.yaml": (2, "session-id-producer"),
    "requestcontrol__dataproducer__sessionid__README.md__26.yaml": (2, "session-id-producer"),
    "requestcontrol__requestattributereporter__README.md__27.yaml": (
        5,
        "request-attribute-reporter",
    ),
    "requestcontrol__requestheader__agentidentity__README.md__54.yaml": (4, "agent-identity"),
    "requestcontrol__requestheader__agentidentity__README.md__63.yaml": (4, "agent-identity"),
    "requestcontrol__screener__disaggregatedsetrollout__README.md__252.yaml": (
        4,
        "disaggregatedset-rollout-screener",
    ),
    "requesthandling__parsers__README.md__30.yaml": (7, "vllmgrpc-parser"),
    "requesthandling__parsers__README.md__49.yaml": (7, "vllmhttp-parser"),
    "requesthandling__parsers__README.md__71.yaml": (9, "anthropic-parser"),
    "requesthandling__parsers__vertexai__README.md__36.yaml": (8, "vertexai-parser"),
    "scheduling__filter__bylabel__README.md__34.yaml": (2, "label-selector-filter"),
    "scheduling__filter__bylabel__README.md__70.yaml": (2, "by-label"),
    "scheduling__filter__endpointattribute__README.md__45.yaml": (2, "endpoint-attribute-filter"),
    "scheduling__filter__prefixcacheaffinity__README.md__94.yaml": (
        2,
        "prefix-cache-affinity-filter",
    ),
    "scheduling__filter__sloheadroomtier__README.md__38.yaml": (2, "slo-headroom-tier-filter"),
    "scheduling__filter__topologyaffinity__README.md__58.yaml": (2, "topology-extractor"),
    "scheduling__filter__utilization__README.md__36.yaml": (2, "utilization-filter"),
    "scheduling__profilehandler__dataparallel__README.md__17.yaml": (
        2,
        "data-parallel-profile-handler",
    ),
    "scheduling__profilehandler__dataparallel__README.md__28.yaml": (
        2,
        "data-parallel-profile-handler",
    ),
    "scheduling__profilehandler__disagg__README.md__143.yaml": (2, "disagg-headers-handler"),
    "scheduling__profilehandler__disagg__README.md__149.yaml": (2, "disagg-headers-handler"),
    "scheduling__profilehandler__disagg__README.md__205.yaml": (2, "prefix-based-pd-decider"),
    "scheduling__profilehandler__disagg__README.md__61.yaml": (2, "disagg-profile-handler"),
    "scheduling__profilehandler__disagg__README.md__67.yaml": (2, "disagg-profile-handler"),
    "scheduling__profilehandler__disagg__README.md__76.yaml": (2, "disagg-profile-handler"),
    "scheduling__profilehandler__headerprofile__README.md__70.yaml": (2, "encode-filter"),
    "scheduling__scorer__activerequest__README.md__16.yaml": (2, "active-request-scorer"),
    "scheduling__scorer__contextlengthaware__README.md__36.yaml": (2, "context-length-aware"),
    "scheduling__scorer__contextlengthaware__README.md__55.yaml": (2, "token-producer"),
    "scheduling__scorer__contextlengthaware__README.md__78.yaml": (2, "context-length-aware"),
    "scheduling__scorer__endpointattribute__README.md__47.yaml": (2, "endpoint-attribute-scorer"),
    "scheduling__scorer__endpointattribute__README.md__63.yaml": (2, "endpoint-attribute-scorer"),
    "scheduling__scorer__headerlabelaffinity__README.md__23.yaml": (
        2,
        "header-label-affinity-scorer",
    ),
    "scheduling__scorer__headerlabelaffinity__README.md__84.yaml": (
        2,
        "disaggregatedset-rollout-screener",
    ),
    "scheduling__scorer__mmcacheaffinity__README.md__44.yaml": (2, "mm-embeddings-cache-producer"),
    "scheduling__scorer__nohitlru__README.md__22.yaml": (2, "precise-prefix-cache-producer"),
    "scheduling__scorer__tokenload__README.md__39.yaml": (2, "token-load-scorer"),
    "scheduling__scorer__topologyaffinity__README.md__80.yaml": (2, "topology-extractor"),
}
# ... and the refused ones for another reason: a mistake upstream's strict decoder refuses too,
# a made-up type in a how-to.
OTHERWISE = {
    "scheduling__scorer__loadaware__README.md__46.yaml": (
        "4: plugins[0].config: unknown field 'config'; allowed keys: name, parameters, type"
    ),
    "docs__discovery.md__580.yaml": "3: plugins[0].type: unknown plugin type 'my-discovery'",
}


def test_every_refused_example_kept_is_checked() -> None:
    assert sorted(p.name for p in REFUSED.glob("*.yaml")) == sorted({**LACKING, **OTHERWISE})


@pytest.mark.parametrize("example", sorted(LACKING))
def test_an_upstream_example_with_a_plugin_sluice_lacks_names_it_its_line_and_the_alternative(
    example: str,
) -> None:
    line, plugin = LACKING[example]
    with pytest.raises(ConfigError) as caught:
        load_sluice_config((REFUSED / example).read_text(), example)
    message = str(caught.value)
    assert message.startswith(f"{example}:{line}: plugins[")
    assert message.endswith(
        f"].type: upstream plugin {plugin!r} is not implemented by Sluice; instead use "
        + SLUICE_INSTEAD[plugin]
    )
    text = (REFUSED / example).read_text().splitlines()[line - 1]
    assert text.split("#")[0].strip().removeprefix("- ").strip() == f"type: {plugin}"


@pytest.mark.parametrize("example", sorted(OTHERWISE))
def test_an_upstream_example_refused_otherwise_says_where_and_why(example: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_sluice_config((REFUSED / example).read_text(), example)
    assert str(caught.value).startswith(f"{example}:{OTHERWISE[example]}")


UPSTREAM_TYPES = [
    line
    for line in (UPSTREAM / "plugin_types_v0.10.0.txt").read_text().splitlines()
    if line and not line.startswith("#")
]


@pytest.mark.parametrize("plugin", UPSTREAM_TYPES)
def test_every_upstream_plugin_type_is_implemented_or_refused_with_an_alternative(
    plugin: str,
) -> None:
    try:
        load_sluice_config(f"plugins:\n- type: {plugin}\n", "x.yaml")
    except ConfigError as exc:
        message = str(exc)
        # Implemented types may want parameters; a lacking one names what to use instead.
        assert "unknown plugin type" not in message, message
        if "is not implemented by Sluice" in message:
            assert message == (
                f"x.yaml:2: plugins[0].type: upstream plugin {plugin!r} is not implemented by "
                f"Sluice; instead use {SLUICE_INSTEAD[plugin]}"
            )


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


def test_the_deprecated_top_level_parser_is_accepted_and_requesthandler_wins() -> None:
    """v0.10.0 still reads `parser: {pluginRef}` (deprecated for `requestHandler.parsers`)."""
    head = "apiVersion: llm-d.ai/v1alpha1\nplugins:\n- type: openai-parser\n"
    assert load_sluice_config(head + "parser: {pluginRef: openai-parser}\n").picker.profiles
    both = "parser: {pluginRef: gone}\nrequestHandler: {parsers: [{pluginRef: openai-parser}]}\n"
    assert load_sluice_config(head + both).picker.profiles  # the new field is the one used


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
        (
            "plugins:\n- type: queue-scorer\nparser:\n  pluginRef: queue-scorer\n",
            "x.yaml:4: parser.pluginRef: plugin 'queue-scorer' (type queue-scorer) cannot serve "
            "here; Sluice offers: openai-parser",
        ),
        (
            "plugins:\n- type: prefix-cache-scorer\n  parameters: {matchLengthWeight: 1.5}\n",
            "x.yaml:3: plugins[0].parameters.matchLengthWeight: must be between 0.0 and 1.0",
        ),
        (
            "plugins:\n- type: prefix-cache-scorer\n  parameters: {matchLengthScaleTokens: 0}\n",
            "x.yaml:3: plugins[0].parameters.matchLengthScaleTokens: must be >= 1",
        ),
    ],
)
def test_v09_mistakes_name_file_line_and_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_sluice_config(text, "x.yaml")
    assert str(caught.value).startswith(message)


# Plugin entries shown alone in upstream's docs and READMEs (tests/config/upstream/fragments,
# verbatim), each loaded as the `plugins:` list of a config: its outcome.
FRAGMENTS = Path(__file__).parent / "upstream" / "fragments"
FRAGMENT_ACCEPTED = [
    "datalayer__source__metrics__README.md__36.yaml",
    "scheduling__scorer__preciseprefixcache__README.md__31.yaml",
    "scheduling__scorer__sessionaffinity__README.md__38.yaml",  # encoded_endpoint_header
    "scheduling__scorer__sessionaffinity__README.md__44.yaml",  # strategy: session_id
]
FRAGMENT_LACKING = {
    "docs__disaggregation.md__412.yaml": (2, "prefix-based-pd-decider"),
    "docs__disaggregation.md__433.yaml": (2, "always-disagg-pd-decider"),
    "docs__disaggregation.md__452.yaml": (2, "always-disagg-multimodal-decider"),
    "docs__disaggregation.md__486.yaml": (2, "disagg-profile-handler"),
    "docs__disaggregation.md__492.yaml": (2, "disagg-profile-handler"),
    "docs__disaggregation.md__501.yaml": (2, "disagg-profile-handler"),
    "docs__disaggregation.md__515.yaml": (2, "disagg-profile-handler"),
    "docs__disaggregation.md__523.yaml": (2, "disagg-profile-handler"),
    "docs__disaggregation.md__532.yaml": (2, "disagg-profile-handler"),
    "datalayer__source__dcgm__README.md__41.yaml": (3, "dcgm-data-source"),
    "datalayer__source__models__README.md__30.yaml": (2, "models-data-source"),
    "requestcontrol__dataproducer__tokenizer__README.md__125.yaml": (2, "token-producer"),
    "requestcontrol__dataproducer__tokenizer__README.md__135.yaml": (2, "token-producer"),
    "requestcontrol__dataproducer__tokenizer__README.md__154.yaml": (2, "token-producer"),
    "requestcontrol__dataproducer__tokenizer__README.md__164.yaml": (2, "token-producer"),
    "scheduling__filter__sessionaffinity__README.md__38.yaml": (2, "session-affinity-filter"),
    "scheduling__filter__sessionaffinity__README.md__44.yaml": (2, "session-affinity-filter"),
    "scheduling__filter__sessionaffinity__README.md__57.yaml": (2, "session-affinity-filter"),
    "scheduling__filter__sessionaffinity__README.md__71.yaml": (4, "session-affinity-filter"),
    "scheduling__profilehandler__headerprofile__README.md__93.yaml": (2, "header-profile-handler"),
    "scheduling__scorer__preciseprefixcache__README.md__40.yaml": (
        2,
        "precise-prefix-cache-producer",
    ),
}
# Sluice has the plugin, not these upstream parameters or values (or, `a-type`, a made-up type)
FRAGMENT_REFUSED = {
    "docs__architecture.md__128.yaml": "3: plugins[0].type: unknown plugin type 'a-type'",
    "datalayer__extractor__metrics__README.md__68.yaml": (
        "4: plugins[0].parameters.engineConfigs: unknown parameter 'engineConfigs'; this "
        "plugin takes no parameters in Sluice; remove them"
    ),
    "requestcontrol__dataproducer__burstprefix__README.md__49.yaml": (
        "4: plugins[0].parameters.prefixMatchInfoProducerName: unknown parameter "
        "'prefixMatchInfoProducerName'"
    ),
    "requestcontrol__dataproducer__preciseprefixcache__README.md__11.yaml": (
        "4: plugins[0].parameters.prefixMatchInfoProducerName: unknown parameter "
        "'prefixMatchInfoProducerName'"
    ),
    "scheduling__scorer__sessionaffinity__README.md__57.yaml": (  # its second source
        "8: plugins[0].parameters.sessionIdConfig.sources[1].attribute: request attribute "
        "'agent-identity': Sluice has no plugin that publishes request attributes"
    ),
    "scheduling__scorer__sessionaffinity__README.md__71.yaml": (  # the decode instance loads
        "13: plugins[1].parameters.profileName: Sluice schedules one profile's result per "
        "request; leave it empty"
    ),
}


def as_config(fragment: str) -> str:
    """The fragment as a config's `plugins:` list (one line is added above it)."""
    first = next(x for x in fragment.splitlines() if x.strip() and not x.strip().startswith("#"))
    if first.lstrip().startswith("-"):
        return "plugins:\n" + fragment
    return "plugins:\n- " + textwrap.indent(fragment, "  ")[2:]


def test_every_fragment_kept_is_checked() -> None:
    expected = {*FRAGMENT_ACCEPTED, *FRAGMENT_LACKING, *FRAGMENT_REFUSED}
    assert sorted(p.name for p in FRAGMENTS.glob("*.yaml")) == sorted(expected)


@pytest.mark.parametrize("example", FRAGMENT_ACCEPTED)
def test_an_upstream_plugin_entry_sluice_has_is_accepted_unchanged(example: str) -> None:
    assert load_sluice_config(as_config((FRAGMENTS / example).read_text()), example).picker


@pytest.mark.parametrize("example", sorted(FRAGMENT_LACKING))
def test_an_upstream_plugin_entry_sluice_lacks_names_it_and_the_alternative(example: str) -> None:
    line, plugin = FRAGMENT_LACKING[example]
    with pytest.raises(ConfigError) as caught:
        load_sluice_config(as_config((FRAGMENTS / example).read_text()), example)
    assert str(caught.value).startswith(f"{example}:{line}: plugins[")
    assert str(caught.value).endswith(
        f"upstream plugin {plugin!r} is not implemented by Sluice; instead use "
        + SLUICE_INSTEAD[plugin]
    )


@pytest.mark.parametrize("example", sorted(FRAGMENT_REFUSED))
def test_an_upstream_plugin_entry_with_parameters_sluice_lacks_names_them(example: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_sluice_config(as_config((FRAGMENTS / example).read_text()), example)
    assert str(caught.value).startswith(f"{example}:{FRAGMENT_REFUSED[example]}")


HOLDBACK = "- type: priority-holdback-policy\n  parameters: "
# Upstream's checks (usagelimits/priorityholdback/config.go; the static threshold's range as
# its README states it), each at its parameter's line.
USAGE_LIMIT_ERRORS = {
    HOLDBACK + "{maxCeiling: 0.9}": "minCeiling: minCeiling is required",
    HOLDBACK + "{minCeiling: 0.2, shape: sigmoid}": "shape: unsupported shape 'sigmoid'",
    HOLDBACK + "{minCeiling: 0.2, domain: tier}": "domain: unsupported domain 'tier'",
    HOLDBACK + "{minCeiling: 1.0}": "minCeiling: must be in [0.0, 1.0), got 1",
    HOLDBACK + "{minCeiling: 0.2, maxCeiling: 1.5}": "maxCeiling: must be in (0.0, 1.0]",
    HOLDBACK + "{minCeiling: 0.5, maxCeiling: 0.5}": "minCeiling: minCeiling (0.5) must be",
    HOLDBACK + "{minCeiling: 0.2, steps: 3}": "steps: unknown parameter 'steps'",
    "- type: static-usage-limit-policy\n  parameters: {threshold: 0}": "threshold: must be in",
    "- type: static-usage-limit-policy\n  parameters: {threshold: 1.2}": "threshold: must be in",
}


@pytest.mark.parametrize("plugin", sorted(USAGE_LIMIT_ERRORS))
def test_a_usage_limit_policy_is_checked_as_upstream_checks_it(plugin: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_sluice_config(f"plugins:\n{plugin}\n", "x.yaml")
    assert str(caught.value).startswith(
        f"x.yaml:3: plugins[0].parameters.{USAGE_LIMIT_ERRORS[plugin]}"
    )


def test_a_usage_limit_is_in_force_when_referenced_and_below_one() -> None:
    declared = "plugins:\n- type: static-usage-limit-policy\n  parameters: {threshold: 0.5}\n"
    # Upstream's default reference is the plugin named static-usage-limit-policy.
    assert load_sluice_config(declared).room.usage_limit is not None
    named = (
        "plugins:\n- {name: mine, type: static-usage-limit-policy, parameters: {threshold: 0.5}}\n"
    )
    assert load_sluice_config(named).room.usage_limit is None  # declared, not referenced
    ref = "flowControl:\n  usageLimitPolicyPluginRef: static-usage-limit-policy\n"
    assert load_sluice_config(declared + ref).room.usage_limit is not None
    default = "plugins:\n- type: static-usage-limit-policy\n"
    assert load_sluice_config(default + ref).room.usage_limit is None  # 1.0: no gating
    bands = "  priorityBands: [{priority: 7}, {priority: -3}]\n"
    limit = load_sluice_config(declared + ref + bands).room.usage_limit
    assert limit is not None and limit.configured_bands == (7, -3)


def test_a_ceiling_below_one_needs_the_utilization_detectors_saturation() -> None:
    text = (
        "plugins:\n- {name: d, type: concurrency-detector}\n"
        "- {type: static-usage-limit-policy, parameters: {threshold: 0.5}}\n"
        "flowControl:\n  saturationDetector: {pluginRef: d}\n"
        "  usageLimitPolicyPluginRef: static-usage-limit-policy\n"
    )
    with pytest.raises(ConfigError, match="utilization-detector"):
        load_sluice_config(text, "x.yaml")
