"""Sluice's default scheduling configuration, used when the user gives none.

Reasoning for the weights (to be re-tuned by the benchmark issue; see docs/scheduling.md):
* prefix-cache-scorer 3 — a prefix hit saves prefill, the dominant cost of long prompts;
  kept at upstream's weight so cache locality stays the first criterion.
* in-flight-load-scorer 2 — load including what Sluice dispatched since the last scrape:
  spreads bursts, and caps how far prefix affinity can pile requests onto one endpoint.
* queue-scorer 1, kv-cache-utilization-scorer 1 — the engine's own view of load; lower than
  upstream's 2 each because the in-flight scorer already covers queueing more precisely.
Weights are normalized (divided by their sum, 7).
"""

from __future__ import annotations

from sluice.scheduling.config import EndpointPickerConfig, load_config

DEFAULT_CONFIG_YAML = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefix-cache-scorer
- type: in-flight-load-scorer
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: in-flight-load-scorer, weight: 2}
  - {pluginRef: queue-scorer, weight: 1}
  - {pluginRef: kv-cache-utilization-scorer, weight: 1}
  - {pluginRef: max-score-picker}
"""

# Upstream's Helm default profile, for comparisons.
UPSTREAM_DEFAULT_CONFIG_YAML = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
"""


def default_config() -> EndpointPickerConfig:
    return load_config(DEFAULT_CONFIG_YAML, "<sluice default config>")
