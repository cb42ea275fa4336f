"""The one config model family: strict models, one error format, and what a config means
survives being written back out (generate → dump YAML → load → equal)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.config import ConfigError, load_sluice_config
from sluice.scheduling.parameters import read_parameters
from sluice.scheduling.pickers import MaxScorePicker
from sluice.scheduling.precise_hashing import HASH_ALGORITHMS
from sluice.scheduling.prefix_scorer import COMPUTED_WHEN
from sluice.scheduling.registry import BUILTINS

SECONDS = st.integers(min_value=0, max_value=3600_000).map(lambda ms: f"{ms}ms")
COUNT = st.integers(min_value=0, max_value=10**12)
POLICY = st.sampled_from(
    ["global-strict-fairness-policy", "round-robin-fairness-policy", "token-fair-fairness-policy"]
)
ORDERING = st.sampled_from(
    ["fcfs-ordering-policy", "edf-ordering-policy", "slo-deadline-ordering-policy"]
)
BAND = st.fixed_dictionaries(
    {},
    optional={
        "maxBytes": COUNT,
        "maxRequests": COUNT,
        "fairnessPolicyRef": POLICY,
        "orderingPolicyRef": ORDERING,
    },
)
FLOW = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["queue", "legacy"]),
        "maxBytes": COUNT,
        "maxRequests": COUNT,
        "defaultRequestTTL": SECONDS,
        "noEndpointRequestTTL": SECONDS,
        "enableEviction": st.booleans(),
        "defaultPriorityBand": BAND,
        "defaultNegativePriorityBand": BAND,
        "priorityBands": st.lists(
            st.tuples(st.integers(-5, 5), BAND), max_size=4, unique_by=lambda b: b[0]
        ).map(lambda bands: [{"priority": p, **band} for p, band in bands]),
        "perFlowMaxRequests": COUNT,
        "fairnessWeights": st.dictionaries(
            st.text("abcxyz", min_size=1, max_size=4),
            st.floats(min_value=0.01, max_value=100, allow_nan=False),
            max_size=3,
        ),
        "fairShareWindow": SECONDS,
        "enginePriority": st.booleans(),
    },
)
DETECTOR = st.fixed_dictionaries(
    {},
    optional={
        "queueDepthThreshold": st.integers(1, 1000),
        "kvCacheUtilThreshold": st.floats(min_value=0.01, max_value=0.99),
        "metricsStalenessThreshold": SECONDS,
        "maxInFlightPerEndpoint": st.integers(0, 512),
        "maxPendingPrefillTokensPerEndpoint": st.integers(0, 10**6),
        "backgroundHeadroomEndpoints": st.integers(0, 8),
        "capToEngineSlots": st.booleans(),
        "prefillTokensPerSecond": st.floats(min_value=1, max_value=1e6),
        "reserveHoldGaps": st.floats(min_value=0.1, max_value=100),
    },
)
WEIGHTS = st.lists(st.floats(min_value=0, max_value=100), min_size=3, max_size=3)
API_VERSION = st.sampled_from(["llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1"])


def _document(api: str, flow: dict, detector: dict, weights: list[float]) -> dict:
    plugins = ["prefix-cache-scorer", "prefill-cost-scorer", "kv-cache-utilization-scorer"]
    return {
        "apiVersion": api,
        "kind": "EndpointPickerConfig",
        "plugins": [{"type": t} for t in plugins],
        "schedulingProfiles": [
            {
                "name": "default",
                "plugins": [{"pluginRef": t, "weight": w} for t, w in zip(plugins, weights)],
            }
        ],
        "saturationDetector": detector,
        "flowControl": flow,
    }


@settings(max_examples=60, deadline=None)
@given(API_VERSION, FLOW, DETECTOR, WEIGHTS)
def test_a_valid_config_round_trips_through_yaml(
    api: str, flow: dict, detector: dict, weights: list[float]
) -> None:
    document = _document(api, flow, detector, weights)
    first = load_sluice_config(yaml.safe_dump(document), "generated.yaml")
    # The same document written in another YAML style (flow style, other key order) means the
    # same; and the loaded config does not depend on where the text came from.
    again = load_sluice_config(
        yaml.safe_dump(document, default_flow_style=True, sort_keys=True), "again.yaml"
    )
    assert (again.picker.profiles, again.flow, again.room) == (
        first.picker.profiles,
        first.flow,
        first.room,
    )
    assert [r.weight for r in first.picker.profiles[0].plugins[:3]] == weights
    if "maxRequests" in flow:
        assert first.flow.max_requests == flow["maxRequests"]
    if "enableEviction" in flow:
        assert first.flow.enable_eviction is flow["enableEviction"]
    if "queueDepthThreshold" in detector:
        assert first.room.queue_depth == detector["queueDepthThreshold"]


@pytest.mark.parametrize("weight", [".nan", ".inf", "-.inf"])
def test_a_weight_that_is_not_a_number_is_refused(weight: str) -> None:
    text = (
        "plugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: default\n  plugins:\n"
        f"  - pluginRef: queue-scorer\n    weight: {weight}\n"
    )
    with pytest.raises(ConfigError, match=r"config.yaml:7: .*weight: expected a number >= 0"):
        load_sluice_config(text, "config.yaml")


def test_a_yaml_syntax_error_names_the_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"^config.yaml:3: invalid YAML: "):
        load_sluice_config(
            "plugins:\n- type: queue-scorer\n  parameters: {a: [1, 2}\n", "config.yaml"
        )


def test_one_error_format_for_every_part() -> None:
    cases = {
        "colour: blue\n": "config.yaml:1: colour: unknown field 'colour'",
        "flowControl:\n  maxByte: 1\n": (
            "config.yaml:2: flowControl.maxByte: unknown field 'maxByte'; did you mean 'maxBytes'?"
        ),
        "plugins:\n- type: max-score-picker\n  parameters: {maxNumOfEndpoints: 0}\n": (
            "config.yaml:3: plugins[0].parameters.maxNumOfEndpoints: must be >= 1"
        ),
    }
    for text, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_sluice_config(text, "config.yaml")
        assert str(caught.value).startswith(message)
        assert caught.value.location and caught.value.path


def test_a_plugin_that_reads_a_data_key_must_run_after_its_writer() -> None:
    text = (
        "plugins:\n- type: prefill-cost-scorer\n- type: prefix-cache-scorer\n"
        "schedulingProfiles:\n- name: default\n  plugins:\n"
        "  - pluginRef: prefill-cost-scorer\n  - pluginRef: prefix-cache-scorer\n"
    )
    with pytest.raises(ConfigError, match=r"config.yaml:7: .*list 'prefix-cache-scorer' first"):
        load_sluice_config(text, "config.yaml")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            "max-score-picker\n  parameters: {maxNumOfEndpoints: true}",
            "config.yaml:3: plugins[0].parameters.maxNumOfEndpoints: expected an integer, got True",
        ),
        (
            "max-score-picker\n  parameters: {maxNumOfEndpoint: 2}",
            "config.yaml:3: plugins[0].parameters.maxNumOfEndpoint: unknown parameter "
            "'maxNumOfEndpoint'; did you mean 'maxNumOfEndpoints'?",
        ),
        (
            "queue-scorer\n  parameters: {scale: 2}",
            "config.yaml:3: plugins[0].parameters.scale: unknown parameter 'scale'; known: none",
        ),
        (
            "in-flight-load-scorer\n  parameters: {tokenScale: .nan}",
            "config.yaml:3: plugins[0].parameters.tokenScale: expected a number, got nan",
        ),
        (
            "precise-prefix-cache-scorer\n  parameters:\n    kvEventsConfig:\n"
            "      podDiscoveryConfig: {socketPort: '5557'}",
            "config.yaml:5: plugins[0].parameters.kvEventsConfig.podDiscoveryConfig.socketPort: "
            "expected an integer, got '5557'",
        ),
    ],
)
def test_a_plugins_parameters_are_read_by_its_model(parameters: str, message: str) -> None:
    """Booleans are not numbers, numbers are finite, and a nested parameter is named by its whole
    path on its own line."""
    with pytest.raises(ConfigError) as caught:
        load_sluice_config(f"plugins:\n- type: {parameters}\n", "config.yaml")
    assert str(caught.value) == message


def test_a_parameter_written_without_a_value_takes_its_default() -> None:
    text = "plugins:\n- type: max-score-picker\n  parameters:\n    maxNumOfEndpoints:\n"
    spec = load_sluice_config(text).picker.plugin("max-score-picker")
    assert read_parameters(spec, MaxScorePicker.Parameters).max_num_of_endpoints == 1


POSITIVE = st.floats(min_value=1e-3, max_value=1e9)
PLUGIN_PARAMETERS = {
    "max-score-picker": {"maxNumOfEndpoints": st.integers(1, 64)},
    "in-flight-load-scorer": {"requestScale": POSITIVE, "tokenScale": POSITIVE},
    "prefill-cost-scorer": {"tokenScale": POSITIVE},
    "prefix-cache-scorer": {
        "blockSize": st.integers(-8, 4096),  # upstream: non-positive means the default
        "maxPrefixBlocksToMatch": st.integers(-8, 4096),
        "lruCapacityPerServer": st.integers(-8, 10**6),
        "autoTune": st.booleans(),
        "computingPrefixes": st.sampled_from(COMPUTED_WHEN),
    },
    "session-affinity-scorer": {
        "headerName": st.text("abcxyz-", min_size=1, max_size=12),
        "maxSessions": st.integers(1, 10**6),
    },
    "precise-prefix-cache-scorer": {
        "tokenProcessorConfig": st.fixed_dictionaries(
            {},
            optional={
                "blockSizeTokens": st.integers(0, 256),
                "hashSeed": st.text("0123456789", max_size=6),
                "hashAlgorithm": st.sampled_from(HASH_ALGORITHMS),
            },
        ),
        "kvEventsConfig": st.fixed_dictionaries(
            {},
            optional={
                "topicFilter": st.sampled_from(["", "kv@"]),
                "concurrency": st.integers(1, 16),
                "podDiscoveryConfig": st.fixed_dictionaries(
                    {},
                    optional={
                        "socketPort": st.integers(1, 65535),
                        "replaySocketPort": st.integers(0, 65535),
                    },
                ),
            },
        ),
        "speculativeIndexing": st.booleans(),
        "speculativeTTL": st.integers(0, 3600).map(lambda s: f"{s}s"),
    },
}
PLUGIN = st.sampled_from(sorted(PLUGIN_PARAMETERS)).flatmap(
    lambda kind: st.tuples(
        st.just(kind), st.fixed_dictionaries({}, optional=PLUGIN_PARAMETERS[kind])
    )
)


@settings(max_examples=60, deadline=None)
@given(PLUGIN)
def test_valid_plugin_parameters_round_trip_through_their_model(plugin: tuple[str, dict]) -> None:
    """Random valid parameters load; what the plugin's model read, written back out by wire
    name, reads as the same; and what was written is what was read."""
    kind, parameters = plugin
    text = yaml.safe_dump({"plugins": [{"type": kind, "parameters": parameters}]})
    spec = load_sluice_config(text, "generated.yaml").picker.plugin(kind)
    model = BUILTINS[kind].Parameters
    read = read_parameters(spec, model)
    assert model.model_validate(read.model_dump(by_alias=True)) == read
    written = dict(parameters)
    if "speculativeTTL" in written:  # a duration reads as seconds
        written["speculativeTTL"] = int(written["speculativeTTL"].removesuffix("s"))
    assert read.model_dump(by_alias=True, exclude_unset=True) == written
