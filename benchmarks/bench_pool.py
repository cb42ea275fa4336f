"""The one-engine pool the overhead benchmarks serve with `sluice serve --resources`."""

from __future__ import annotations

from pathlib import Path


def serve_manifests(workdir: Path, engine_port: int) -> Path:
    """A manifest directory: pool `bench` with one engine on 127.0.0.1:`engine_port`."""
    manifests = workdir / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "pool.yaml").write_text(
        f"""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: bench, namespace: default}}
spec:
  selector: {{matchLabels: {{app: bench-engine}}}}
  targetPorts: [{{number: {engine_port}}}]
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
