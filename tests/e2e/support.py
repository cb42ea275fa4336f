"""What the end-to-end tests share: pool manifests (ports and waiting: `sluice.bench.harness`)."""

from __future__ import annotations

from pathlib import Path


def write_pool(directory: Path, ports: list[int], extra: str = "") -> Path:
    """One pool of engines on 127.0.0.1 (one target port each); returns the manifest file."""
    targets = "".join(f"\n  - number: {p}" for p in ports)
    manifest = directory / "pool.yaml"
    manifest.write_text(
        f"""
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: pool, namespace: default}}
spec:
  selector: {{matchLabels: {{app: sim}}}}
  targetPorts:{targets}
  endpointPickerRef: {{name: sluice, port: {{number: 9002}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: engines, namespace: default, labels: {{app: sim}}}}
status: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: "True"}}]}}
{extra}"""
    )
    return manifest
