"""The one-engine pool the overhead benchmarks serve with `sluice serve --resources`."""

from __future__ import annotations

from pathlib import Path


def serve_manifests(workdir: Path, engine_port: int | list[int]) -> Path:
    """A manifest directory: pool `bench` with the engines on 127.0.0.1 at `engine_port` (one
    port, or several: one Pod with a target port each)."""
    ports = engine_port if isinstance(engine_port, list) else [engine_port]
    target_ports = ", ".join(f"{{number: {p}}}" for p in ports)
    manifests = workdir / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "pool.yaml").write_text(
        f"""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: bench, namespace: default}}
spec:
  selector: {{matchLabels: {{app: bench-engine}}}}
  targetPorts: [{target_ports}]
  endpointPickerRef: {{name: sluice, port: {{number: 9002}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: bench-engine, namespace: default, labels: {{app: bench-engine}}}}
status:
  podIP: 127.0.0.1
  conditions: [{{type: Ready, status: "True"}}]
"""
    )
    return manifests
