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
_NO_PD = "single-profile-handler (Sluice has no P/D disaggregation)"
_OWN_SCRAPE = "the engines' own /metrics, which Sluice scrapes (it reads no GPU telemetry)"
_OWN_WATCH = "Sluice's own watch of the pool (--pool-name) or --manifests"
_NO_PREDICTOR = "the slo-deadline-ordering-policy (Sluice has no latency predictor)"
_ONE_CLUSTER = "one Sluice per cluster (no multi-cluster mode) with "
_EVICTION = "flowControl.enableEviction (negative bands, newest first, before the first token)"
_ONE_ZONE = "one InferencePool per zone (Sluice reads no topology labels)"
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
    # The rest of llm-d-router v0.10.0's registry (cmd/epp/runner/runner.go), so that every
    # upstream type is either implemented or refused with an alternative
    # (tests/config/test_upstream_examples.py checks the list kept in tests/config/upstream).
    "agent-identity": "x-llm-d-inference-fairness-id, set by the client or gateway",
    "always-disagg-pd-decider": _NO_PD,
    "by-label": "the subset hint (envoy.lb.subset_hint) or one pool per role",
    "context-length-aware": "one InferencePool per context-length class (--max-model-len each)",
    "dcgm-data-source": _OWN_SCRAPE,
    "dcgm-extractor": _OWN_SCRAPE,
    "destination-endpoint-served-verifier": "nothing: an upstream conformance-test plugin",
    "disagg-headers-handler": _NO_PD,
    "prefill-header-handler": _NO_PD,
    "pd-profile-handler": _NO_PD,
    "disaggregatedset-rollout-screener": "one InferencePool per role (no P/D disaggregation)",
    "endpoint-attribute-filter": "saturationDetector caps (maxInFlightPerEndpoint, …)",
    "endpoint-attribute-scorer": "queue-scorer or kv-cache-utilization-scorer",
    "endpoint-notification-source": _OWN_WATCH,
    "k8s-notification-source": _OWN_WATCH,
    "header-label-affinity-scorer": "the subset hint (envoy.lb.subset_hint)",
    "latency-scorer": _NO_PREDICTOR,
    "predicted-latency-producer": _NO_PREDICTOR,
    "slo-headroom-tier-filter": _NO_PREDICTOR,
    "mm-embeddings-cache-producer": "prefix-cache-scorer (no multimodal encoder cache)",
    "mm-embeddings-cache-scorer": "prefix-cache-scorer (no multimodal encoder cache)",
    "models-data-source": "InferenceModelRewrite rules (Sluice reads no /v1/models)",
    "models-data-extractor": "InferenceModelRewrite rules (Sluice reads no /v1/models)",
    "multicluster-approx-prefix-cache-producer": _ONE_CLUSTER + "prefix-cache-scorer",
    "multicluster-file-discovery": _ONE_CLUSTER + "--manifests",
    "multicluster-kv-cache-utilization-scorer": _ONE_CLUSTER + "kv-cache-utilization-scorer",
    "multicluster-metrics-data-source": _ONE_CLUSTER + "metrics-data-source",
    "multicluster-metrics-extractor": _ONE_CLUSTER + "core-metrics-extractor",
    "multicluster-prefix-cache-scorer": _ONE_CLUSTER + "prefix-cache-scorer",
    "multicluster-queue-scorer": _ONE_CLUSTER + "queue-scorer",
    "multicluster-session-affinity-filter": _ONE_CLUSTER + "session-affinity-scorer",
    "p2p-source-producer": "prefix-cache-scorer (no peer-to-peer KV transfer)",
    "prefix-cache-affinity-filter": "prefix-cache-scorer with a higher weight",
    "priority-then-time-eviction-order-policy": _EVICTION,
    "sheddable-eviction-filter": _EVICTION,
    "request-attribute-reporter": "Sluice's request metrics (llm_d_epp_request_*)",
    "session-id-producer": "session-affinity-scorer",
    "tokenizer": "Sluice's own token estimate (4 characters a token)",
    "topology-affinity-filter": _ONE_ZONE,
    "topology-affinity-scorer": _ONE_ZONE,
    "topology-extractor": _ONE_ZONE,
}
