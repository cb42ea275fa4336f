"""The `flowControl:` block: upstream's names, Sluice's own, and strict errors."""

from __future__ import annotations

import pytest
import yaml

from sluice.config import FlowControlConfigError, parse_duration, parse_flow_control, parse_quantity
from sluice.flowcontrol import FlowControlConfig

FULL_BLOCK = """
mode: queue
maxBytes: 1Gi
maxRequests: 5000
defaultRequestTTL: 30s
defaultPriorityBand:
  maxBytes: 500M
  maxRequests: 1000
  fairnessPolicyRef: round-robin-fairness-policy
  orderingPolicyRef: fcfs-ordering-policy
priorityBands:
  - priority: 10
    maxRequests: 200
    fairnessPolicyRef: token-fair
    orderingPolicyRef: edf-ordering-policy
  - priority: -1
    maxBytes: 100Mi
perFlowMaxRequests: 50
perFlowMaxBytes: 64Mi
tokenWeights: {input: 1, output: 4}
defaultOutputTokens: 512
fairnessWeights: {gold: 4, bronze: 0.5}
enginePriority: true
"""


def test_every_field_of_a_full_block_is_read() -> None:
    config = parse_flow_control(yaml.safe_load(FULL_BLOCK))
    assert config.mode == "queue"
    assert (config.max_bytes, config.max_requests) == (2**30, 5000)
    assert config.default_request_ttl_s == 30.0
    assert config.per_flow_max_requests == 50 and config.per_flow_max_bytes == 64 * 2**20
    assert (config.token_cost.input_weight, config.token_cost.output_weight) == (1.0, 4.0)
    assert config.token_cost.default_output_tokens == 512
    assert config.weight("gold") == 4.0 and config.weight("anyone") == 1.0
    assert config.engine_priority is True
    high = config.band(10)
    assert (high.max_requests, high.fairness, high.ordering) == (200, "token-fair", "edf")
    assert high.max_bytes == 500_000_000  # inherited from the default band
    sheddable = config.band(-1)
    assert (sheddable.max_bytes, sheddable.fairness) == (100 * 2**20, "round-robin")
    unlisted = config.band(3)  # made from the template, as upstream's dynamic bands
    assert (unlisted.priority, unlisted.max_requests, unlisted.ordering) == (3, 1000, "fcfs")


def test_defaults_are_token_fair_fcfs_and_upstreams_limits() -> None:
    config = parse_flow_control(None)
    assert config == FlowControlConfig()
    band = config.band(0)
    assert (band.fairness, band.ordering, band.max_bytes) == ("token-fair", "fcfs", 10**9)
    assert (config.max_bytes, config.max_requests, config.default_request_ttl_s) == (0, 0, None)


def test_policy_refs_may_name_plugin_instances() -> None:
    block = {"defaultPriorityBand": {"fairnessPolicyRef": "my-rr"}}
    config = parse_flow_control(block, plugin_types={"my-rr": "round-robin-fairness-policy"})
    assert config.band(0).fairness == "round-robin"


@pytest.mark.parametrize(
    ("block", "path", "hint"),
    [
        ({"maxByte": 1}, "flowControl.maxByte", "did you mean 'maxBytes'"),
        ({"priorityBands": [{"priority": 1, "maxRequest": 2}]},
         "flowControl.priorityBands[0].maxRequest", "did you mean 'maxRequests'"),
        ({"priorityBands": [{"maxBytes": 1}]}, "flowControl.priorityBands[0].priority", "required"),
        ({"priorityBands": [{"priority": 1}, {"priority": 1}]},
         "flowControl.priorityBands[1].priority", "configured twice"),
        ({"defaultPriorityBand": {"fairnessPolicyRef": "wfq"}},
         "flowControl.defaultPriorityBand.fairnessPolicyRef", "use one of"),
        ({"mode": "fast"}, "flowControl.mode", "'queue' or 'legacy'"),
        ({"maxBytes": "1 GB"}, "flowControl.maxBytes", "'1Gi'"),
        ({"maxBytes": -5}, "flowControl.maxBytes", ">= 0"),
        ({"defaultRequestTTL": "30 seconds"}, "flowControl.defaultRequestTTL", "'30s'"),
        ({"fairnessWeights": {"a": 0}}, "flowControl.fairnessWeights.a", "> 0"),
        ({"tokenWeights": {"prompt": 1}}, "flowControl.tokenWeights.prompt", "allowed keys"),
        ({"enginePriority": "yes"}, "flowControl.enginePriority", "true/false"),
    ],
)  # fmt: skip
def test_mistakes_name_the_key_path_and_the_fix(block: dict, path: str, hint: str) -> None:
    with pytest.raises(FlowControlConfigError) as caught:
        parse_flow_control(block)
    assert caught.value.path == path
    assert hint in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0), (5, 5.0), ("0", 0.0)],
)
def test_durations_read_like_go(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "count"),
    [(1000, 1000), ("1Gi", 2**30), ("500M", 500 * 10**6), ("1.5Ki", 1536), ("1e3", 1000),
     ("64k", 64000)],
)  # fmt: skip
def test_capacities_accept_ints_and_kubernetes_quantities(text: object, count: int) -> None:
    assert parse_quantity(text) == count


def test_a_zero_ttl_means_no_ttl_as_upstream() -> None:
    assert parse_flow_control({"defaultRequestTTL": "0s"}).default_request_ttl_s is None


def test_upstreams_usage_limit_ref_is_accepted() -> None:
    assert parse_flow_control({"usageLimitPolicyPluginRef": "static"}) == FlowControlConfig()
