"""Sluice's default scheduling configuration, used when the user gives none.

Chosen by measurement with `sluice bench` (virtual time, 4 simulated 8B/H100 engines; the
README's performance tables and benchmarks/RESULTS.md hold the numbers):
* prefix-cache-scorer 3 — a prefix hit saves prefill, the dominant cost of long prompts.
* prefill-cost-scorer 3 — the prefill a request's first token would wait behind on each
  endpoint (pending prompt tokens plus its own uncached part): keeps prefills from stacking on
  one engine and lets a hot prefix spread once its holder is busy. Must come after the prefix
  scorer (it reads that scorer's match).
* in-flight-load-scorer 4 — load including what Sluice dispatched since the last scrape:
  spreads bursts between scrapes, and a prefix every request shares (an agent framework's tool
  preamble) across the pool: at 2 every agentic session went to the engine holding the shared
  preamble (TTFT p90 2.09 s / 5.17 s at 0.5 / 1 sessions/s, round-robin 1.78 / 4.0 s); at 4,
  1.13 / 1.43 s, shared-prefix goodput and the isolation scenarios unchanged, multi-turn p90
  0.205 -> 0.159 s, lora-mix p90 0.81 -> 1.19 s (p99 4.5 -> 3.8 s; round-robin 4.9 s).
* kv-cache-utilization-scorer 1, counting dispatches — the engine's memory pressure (dropping
  it cost LoRA-heavy traffic p90 TTFT in the sweeps), including what Sluice sent since the
  last scrape: with the scraped value alone a burst of hundreds (a backlog released when the
  arrivals stop) went to the engine that had run fewest (noisy-neighbour at 150 %: its output
  tokens/s 0.810, 0.745x round-robin's in seeds 2 and 3; counted, 0.956, 0.954x).
* lora-affinity-scorer 1 — requests for an adapter go where it is loaded (p90 TTFT on the
  LoRA mix 4.1 s → 0.35 s against upstream's default).
* no queue-scorer — its min-max form lets a one-request difference swing its whole weight and
  pull requests away from the engine holding their prefix (shared-prefix goodput fell by ~25%
  with it).
Weights are normalized (divided by their sum, 12). The room rule that goes with it (Sluice's
saturationDetector caps) has its defaults in `RoomSettings` and `sluice.config.room`.
`sluice.config.default_config()` reads it.
"""

from __future__ import annotations

DEFAULT_CONFIG_YAML = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefix-cache-scorer
- type: prefill-cost-scorer
- type: in-flight-load-scorer
- type: kv-cache-utilization-scorer
  parameters: {countDispatched: true}
- type: lora-affinity-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: prefill-cost-scorer, weight: 3}
  - {pluginRef: in-flight-load-scorer, weight: 4}
  - {pluginRef: kv-cache-utilization-scorer, weight: 1}
  - {pluginRef: lora-affinity-scorer, weight: 1}
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
