"""Upstream plugin types that are not scheduling plugins: flow control's policies and detectors,
request parsers and data-layer plugins, with what each becomes in Sluice; and, for upstream types
Sluice does not implement, what it offers instead (the error names it)."""

from __future__ import annotations

FAIRNESS_TYPES = frozenset(
    {"global-strict-fairness-policy", "round-robin-fairness-policy", "token-fair-fairness-policy"}
)
ORDERING_TYPES = frozenset(
    {"fcfs-ordering-policy", "edf-ordering-policy", "slo-deadline-ordering-policy"}
)
DETECTOR_TYPES = frozenset({"utilization-detector", "concurrency-detector"})
USAGE_LIMIT_TYPES = frozenset({"static-usage-limit-policy", "priority-holdback-policy"})
# Sluice parses OpenAI-style bodies (completions, chat completions) itself.
PARSER_TYPES = frozenset({"openai-parser"})
# Sluice scrapes the engines' Prometheus metrics itself (`datalayer/`).
DATA_TYPES = frozenset({"metrics-data-source", "core-metrics-extractor"})

FLOW_CONTROL_TYPES = FAIRNESS_TYPES | ORDERING_TYPES | DETECTOR_TYPES | USAGE_LIMIT_TYPES
NON_SCHEDULING_TYPES = FLOW_CONTROL_TYPES | PARSER_TYPES | frozenset({"core-metrics-extractor"})

_PREFIX = "prefix-cache-scorer (its own approximate prefix index, no producer needed)"
SLUICE_INSTEAD = {
    "approx-prefix-cache-producer": _PREFIX,
    "precise-prefix-cache-producer": "precise-prefix-cache-scorer (KV events over ZMQ)",
    "burst-prefix-cache-producer": _PREFIX,
    "label-selector-filter": "the subset hint (envoy.lb.subset_hint) or one pool per role",
    "by-label-selector": "the request's subset hint (envoy.lb.subset_hint)",
    "decode-filter": "one InferencePool per role (Sluice has no P/D disaggregation)",
    "prefill-filter": "one InferencePool per role (Sluice has no P/D disaggregation)",
    "encode-filter": "one InferencePool per role (Sluice has no E/P/D disaggregation)",
    "disagg-profile-handler": "single-profile-handler (Sluice has no P/D disaggregation)",
    "prefix-based-pd-decider": "single-profile-handler (Sluice has no P/D disaggregation)",
    "always-disagg-multimodal-decider": "single-profile-handler (no E/P/D disaggregation)",
    "data-parallel-profile-handler": "single-profile-handler",
    "header-profile-handler": "single-profile-handler",
    "file-discovery": "--manifests (a directory of InferencePool and Pod manifests, live reload)",
    "inflight-load-producer": "in-flight-load-scorer (Sluice counts its own dispatches)",
    "token-producer": "Sluice's own token estimate (4 characters a token)",
    "active-request-scorer": "in-flight-load-scorer",
    "load-aware-scorer": "in-flight-load-scorer",
    "token-load-scorer": "in-flight-load-scorer",
    "utilization-filter": "saturationDetector caps (maxInFlightPerEndpoint, …)",
    "no-hit-lru-scorer": "prefix-cache-scorer",
    "session-affinity-filter": "session-affinity-scorer",
    "program-aware-fairness": "token-fair-fairness-policy (weighted tokens, fairnessWeights)",
    "soft-reflective-ceiling-policy": "static-usage-limit-policy or priority-holdback-policy",
    "anthropic-parser": "openai-parser (OpenAI-style bodies only)",
    "vllmhttp-parser": "openai-parser (OpenAI-style bodies only)",
    "vllmgrpc-parser": "openai-parser (OpenAI-style bodies only)",
    "sglanghttp-parser": "openai-parser (OpenAI-style bodies only)",
    "vertexai-parser": "openai-parser (OpenAI-style bodies only)",
    "passthrough-parser": "openai-parser (OpenAI-style bodies only)",
    "probabilistic-admitter": "flowControl priority bands (negative bands are shed first)",
    "latency-slo-admitter": "the slo-deadline-ordering-policy",
}
