"""`sluice serve` options: upstream EPP's flags (names, forms and defaults) plus Sluice's own."""

from __future__ import annotations

from sluice.cli.flags import Flag, FlagError, FlagSet
from sluice.proxy.routes import RouteSpecError, parse_routes
from sluice.replicas.settings import replica_settings
from sluice.settings import ServeSettings

U = "upstream EPP"
S = "sluice"

SERVE_FLAGS: tuple[Flag, ...] = (
    # Pool and discovery
    Flag("pool-name", "str", "", "Name of the InferencePool this EPP serves.", group=U),
    Flag(
        "pool-namespace",
        "str",
        "",
        "Namespace of the pool (default: $NAMESPACE, else 'default').",
        group=U,
    ),
    Flag("pool-group", "str", "inference.networking.k8s.io", "API group of the pool.", group=U),
    Flag(
        "endpoint-selector",
        "str",
        "",
        "Standalone mode without CRDs: label selector k=v,... for model-server Pods.",
        group=U,
    ),
    Flag(
        "endpoint-target-ports",
        "str",
        "",
        "Standalone mode: comma-separated target ports.",
        group=U,
    ),
    # Servers
    Flag("grpc-port", "port", 9002, "ext_proc gRPC port.", group=U, example="9002"),
    Flag("grpc-health-port", "port", 9003, "gRPC health service port.", group=U, example="9003"),
    Flag("metrics-port", "port", 9090, "Prometheus /metrics port.", group=U, example="9090"),
    Flag(
        "secure-serving",
        "bool",
        True,
        "Serve ext_proc over TLS (self-signed if no --cert-path).",
        group=U,
    ),
    Flag("cert-path", "str", "", "Directory holding tls.crt and tls.key.", group=U),
    Flag(
        "enable-cert-reload",
        "bool",
        False,
        "Serve a rotated certificate from --cert-path without a restart (new connections).",
        group=U,
    ),
    Flag("health-checking", "bool", False, "Also serve gRPC health on the ext_proc port.", group=U),
    Flag(
        "metrics-endpoint-auth",
        "bool",
        True,
        "Protect /metrics with Kubernetes "
        "TokenReview + SubjectAccessReview (off when --resources is used).",
        group=U,
    ),
    Flag(
        "enable-pprof",
        "bool",
        True,
        "Accepted for compatibility (Go profiling; no-op).",
        group=U,
        no_op="Go's net/http/pprof has no Python counterpart to serve",
    ),
    Flag(
        "tracing",
        "bool",
        True,
        "OpenTelemetry tracing: spans are exported over OTLP/HTTP when "
        "OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set; --tracing=false: never.",
        group=U,
    ),
    # Configuration
    Flag(
        "config-file",
        "str",
        "",
        "EndpointPickerConfig YAML (plugins, profiles, "
        "saturationDetector, featureGates, flowControl).",
        group=U,
    ),
    Flag("config-text", "str", "", "The same configuration given inline.", group=U),
    # Model-server metrics
    Flag(
        "refresh-metrics-interval",
        "duration",
        0.05,
        "How often each endpoint's metrics are scraped.",
        group=U,
        above=0,  # 0 made the scraper a busy loop (48 % of a core idle)
        example="50ms",
    ),
    Flag(
        "refresh-prometheus-metrics-interval",
        "duration",
        5.0,
        "How often the pool gauges on /metrics (average KV cache and queue, ready endpoints, "
        "queue per endpoint) are recomputed; a scrape in between sees the last values.",
        group=U,
        above=0,
        example="5s",
    ),
    Flag(
        "metrics-staleness-threshold",
        "duration",
        2.0,
        "Metrics older than this are stale.",
        group=U,
        above=0,
        example="2s",
    ),
    Flag(
        "total-queued-requests-metric",
        "str",
        "",
        "Metric spec for waiting requests (default by engine: vllm:num_requests_waiting).",
        group=U,
    ),
    Flag("total-running-requests-metric", "str", "", "Metric spec for running requests.", group=U),
    Flag(
        "kv-cache-usage-percentage-metric",
        "str",
        "",
        "Metric spec for KV-cache use (0-1).",
        group=U,
    ),
    Flag(
        "lora-info-metric",
        "str",
        "",
        'Metric spec for LoRA adapters ("" keeps the engine default).',
        group=U,
    ),
    Flag("cache-info-metric", "str", "", "Metric spec for cache config (block size).", group=U),
    Flag("model-server-metrics-path", "str", "/metrics", "Path of the engines' metrics.", group=U),
    Flag(
        "model-server-metrics-scheme",
        "str",
        "http",
        "http or https.",
        group=U,
        choices=("http", "https"),
    ),
    Flag(
        "model-server-metrics-port",
        "int",
        0,
        "Metrics port when a pool has one target port.",
        group=U,
        deprecated="use the target port",
    ),
    Flag(
        "model-server-metrics-https-insecure-skip-verify",
        "bool",
        True,
        "Skip TLS verification when scraping over https (upstream's default); "
        "--model-server-metrics-https-insecure-skip-verify=false verifies the engines' "
        "certificates against the system roots or --model-server-metrics-https-ca-file.",
        group=U,
    ),
    # Routing
    Flag(
        "disable-endpoint-subset-filter",
        "bool",
        False,
        "Ignore the gateway's subset hint.",
        group=U,
    ),
    Flag(
        "drain-timeout",
        "duration",
        30.0,
        "On SIGTERM: readiness turns NOT_SERVING, new work is refused (GOAWAY, 503 with "
        "Retry-After), queued requests wait up to half of this, requests in flight up to all "
        "of it (see docs/security.md).",
        group=U,
        at_least=0,
        example="30s",
    ),
    # HA
    Flag(
        "ha-enable-leader-election",
        "bool",
        False,
        "Leader election with a Lease; only the leader reports ready.",
        group=U,
    ),
    # Logging (zap + klog compatible)
    Flag(
        "v",
        "int",
        2,
        "Log verbosity (2 default, 4 debug, 5 trace).",
        aliases=("verbosity",),
        group=U,
    ),
    Flag(
        "log-level",
        "str",
        "",
        "debug|info|warn|error (newer upstream charts pass it; debug/trace raise -v).",
        group=U,
    ),
    Flag(
        "zap-encoder",
        "str",
        "",
        "json|console: mapped to --log-format.",
        group=U,
        choices=("", "json", "console"),
    ),
    Flag("zap-log-level", "str", "", "debug|info|error (debug raises -v as --log-level).", group=U),
    Flag(
        "zap-devel",
        "bool",
        False,
        "Accepted for compatibility.",
        group=U,
        no_op="zap's development mode; Sluice's logs have one mode",
    ),
    Flag(
        "zap-stacktrace-level",
        "str",
        "",
        "Accepted for compatibility.",
        group=U,
        no_op="Python logs a traceback with every logged exception, at any level",
    ),
    Flag(
        "zap-time-encoding",
        "str",
        "",
        "Accepted for compatibility.",
        group=U,
        no_op="Sluice's log timestamps have one encoding",
    ),
    # Sluice
    Flag(
        "resources",
        "str",
        "",
        "A manifest file or directory (InferencePool, "
        "InferenceObjective, InferenceModelRewrite, Pods) used instead of a cluster; "
        "hot-reloaded.",
        group=S,
    ),
    Flag(
        "model-server-metrics-https-ca-file",
        "str",
        "",
        "CA bundle (PEM) the engines' metrics certificates are verified against when "
        "--model-server-metrics-https-insecure-skip-verify=false (default: the system roots).",
        group=S,
    ),
    Flag(
        "proxy-port",
        "port",
        0,
        "Also serve the OpenAI-compatible HTTP proxy on this port (0: off).",
        group=S,
        example="8080",
    ),
    Flag("proxy-host", "str", "127.0.0.1", "Address the proxy binds.", group=S),
    Flag(
        "proxy-allowed-routes",
        "str",
        "",
        "Proxy: routes forwarded besides the OpenAI inference APIs and GET /v1/models, as "
        "'METHOD /path,...' (e.g. 'POST /v1/rerank,GET /health'); any other is 404.",
        group=S,
    ),
    Flag(
        "engine-keepalive-timeout",
        "duration",
        4.0,
        "Proxy: how long an idle connection to an engine is kept for reuse (keep it below the "
        "engine's own: 5s for vLLM and llama.cpp; 0: a new connection per request).",
        group=S,
        at_least=0,
        example="4s (0 disables reuse)",
    ),
    Flag(
        "request-header-timeout",
        "duration",
        10.0,
        "Proxy: a request head must be complete this long after its connection opened or the "
        "previous response ended (also how long an idle client connection is kept).",
        group=S,
        above=0,
        example="10s",
    ),
    Flag(
        "request-body-timeout",
        "duration",
        60.0,
        "Proxy: a request body must arrive within this (408 after).",
        group=S,
        above=0,
        example="60s",
    ),
    Flag(
        "engine-first-byte-timeout",
        "duration",
        300.0,
        "Proxy: an engine that sends no response head this long after the request is failed "
        "over (the next fallback, else 504). Non-streamed answers come at the end: keep it "
        "above the longest generation.",
        group=S,
        above=0,
        example="300s",
    ),
    Flag(
        "outlier-consecutive-failures",
        "int",
        5,
        "Passive outlier detection (as Envoy's consecutive_5xx): an endpoint whose requests "
        "fail this many times in a row (5xx, failed connections) gets no new ones for a "
        "back-off (0: off).",
        group=S,
        at_least=0,
        example="5",
    ),
    Flag(
        "outlier-base-ejection",
        "duration",
        30.0,
        "Outlier detection: the first ejection's length; each further one adds as much "
        "(at most 300s).",
        group=S,
        above=0,
        example="30s",
    ),
    Flag(
        "grpc-host",
        "str",
        "0.0.0.0",
        "Listen address of the ext_proc, health and metrics servers (0.0.0.0 as upstream: "
        "the gateway reaches the Pod IP; 127.0.0.1 for loopback only). See docs/security.md.",
        group=S,
    ),
    Flag(
        "ext-proc-transport",
        "str",
        "h2",
        "h2 (Sluice's own HTTP/2 frame layer: the least CPU per request), hyper "
        "(python-hyper's h2 state machine) or grpc (grpc.aio).",
        group=S,
        choices=("h2", "hyper", "grpc"),
    ),
    Flag(
        "disable-extproc", "bool", False, "Run without the ext_proc server (proxy only).", group=S
    ),
    Flag(
        "log-format",
        "str",
        "console",
        "console (key=value) or json.",
        group=S,
        choices=("console", "json", "text"),
    ),
    Flag(
        "max-body-bytes",
        "int",
        16 * 1024 * 1024,
        "Largest request body accepted (413 above).",
        group=S,
        above=0,
        example="16777216",
    ),
    Flag(
        "max-model-len",
        "int",
        131072,
        "The models' context length (vLLM's --max-model-len): max_tokens and prompt estimates "
        "are clamped to it before flow control charges them.",
        group=S,
        above=0,
        example="32768",
    ),
    Flag(
        "keep-control-headers",
        "bool",
        False,
        "Forward Sluice's control headers to model servers.",
        group=S,
    ),
    Flag(
        "engine",
        "str",
        "vllm",
        "Engine metric profile: vllm, sglang, trtllm or llamacpp.",
        group=S,
        choices=("vllm", "sglang", "trtllm", "llamacpp"),
    ),
    Flag(
        "metric-names",
        "str",
        "both",
        "Names Sluice's metrics are exported under: both, llm-d (llm_d_epp_*) or gie "
        "(GIE v1.3's inference_objective_*, inference_pool_*, inference_extension_*).",
        group=S,
        choices=("both", "llm-d", "gie"),
    ),
    Flag(
        "emit-endpoint-scores",
        "bool",
        False,
        "Return the primary profile's score per endpoint: ext_proc in envoy.lb dynamic metadata "
        "(x-gateway-destination-endpoint-scores), the proxy as a response header of that name.",
        group=U,
    ),
    Flag(
        "decision-receipts",
        "int",
        1024,
        "Decision receipts kept for GET /debug/decisions and the dashboard (0: off).",
        group=S,
    ),
    Flag(
        "decision-receipts-max-bytes",
        "int",
        4 * 1024 * 1024,
        "Memory bound of the receipt ring, in bytes of encoded receipts.",
        group=S,
    ),
    # Active-active replicas (docs/replicas.md)
    Flag(
        "replicas-store",
        "str",
        "",
        "Redis/Valkey URL shared by the pool's active-active replicas (redis://host:6379/0): "
        "one priority order, one fair share and split endpoint caps across them (empty: alone).",
        group=S,
    ),
    Flag(
        "replica-id",
        "str",
        "",
        "This replica's name in the store (default: $POD_NAME, else host-pid).",
        group=S,
    ),
    Flag(
        "replicas-sync-interval",
        "duration",
        0.05,
        "How often replicas exchange queue summaries and renew leases (at most 10s).",
        group=S,
    ),
    Flag(
        "replicas-lease",
        "duration",
        1.0,
        "How long a replica's share of an endpoint's cap outlives its last renewal (a dead "
        "replica's share returns to the others within it; at least 3 sync intervals).",
        group=S,
    ),
    Flag(
        "replicas-store-timeout",
        "duration",
        0.0,
        "A sync the store has not answered within this makes the replica fall back to "
        "local-only flow control until a sync succeeds (0: 250ms, at least one sync interval, "
        "at most half a lease; set: at least the interval, below the lease). A refused or lost "
        "connection falls back at once.",
        group=S,
    ),
)


def serve_flagset() -> FlagSet:
    return FlagSet("sluice serve", SERVE_FLAGS)


def parse_serve_options(argv: list[str]) -> ServeSettings:
    """The settings `argv` gives, or a `FlagError` naming the flag and the fix (each flag's
    own values are checked where it is declared, above; here only what spans flags)."""
    values, positional, explicitly_set = serve_flagset().parse(argv)
    if positional:
        raise FlagError(f"unexpected argument {positional[0]!r}: `sluice serve` takes only flags")
    try:
        replica_settings(values)
    except ValueError as exc:
        raise FlagError(str(exc)) from None
    if values["config-file"] and values["config-text"]:
        raise FlagError("--config-file and --config-text are mutually exclusive: give one")
    if bool(values["pool-name"]) == bool(values["endpoint-selector"]):
        raise FlagError(
            "exactly one of --pool-name and --endpoint-selector must be set "
            "(e.g. --pool-name quickstart)"
        )
    if values["enable-cert-reload"] and not (values["cert-path"] and values["secure-serving"]):
        raise FlagError(
            "--enable-cert-reload reloads the pair in --cert-path: pass --cert-path DIR (a "
            "self-signed certificate is made at start and never rotated)"
        )
    try:
        parse_routes(str(values.get("proxy-allowed-routes", "")))
    except RouteSpecError as exc:
        raise FlagError(f"--proxy-allowed-routes: {exc}") from None
    return ServeSettings.from_flags(values, frozenset(explicitly_set))
