"""The pool benchmarks serve with `sluice serve --resources`: one manifest directory, written
the same way for the overhead benchmarks and the wall-clock runner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def serve_manifests(
    workdir: Path,
    engine_port: int | Sequence[int],
    *,
    hosts: Sequence[str] = ("127.0.0.1",),
    objectives: Mapping[str, int] | None = None,
) -> Path:
    """A manifest directory: pool `bench` with target ports `engine_port` (one, or several: a
    target port each, upstream's ranks), a ready Pod `engine-<i>` per host, and an
    InferenceObjective per name in `objectives` (name -> priority)."""
    ports = [engine_port] if isinstance(engine_port, int) else list(engine_port)
    targets = ", ".join(f"{{number: {p}}}" for p in ports)
    docs = [
        f"""apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: bench, namespace: default}}
spec:
  selector: {{matchLabels: {{app: bench-engine}}}}
  targetPorts: [{targets}]
  endpointPickerRef: {{name: sluice, port: {{number: 9002}}}}
"""
    ]
    for i, host in enumerate(dict.fromkeys(hosts)):  # each host once, in order
        docs.append(
            f"""apiVersion: v1
kind: Pod
metadata: {{name: engine-{i}, namespace: default, labels: {{app: bench-engine}}}}
status:
  podIP: {host}
  conditions: [{{type: Ready, status: "True"}}]
"""
        )
    for name, priority in (objectives or {}).items():
        docs.append(
            f"""apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {{name: {name}, namespace: default}}
spec: {{priority: {priority}, poolRef: {{name: bench}}}}
"""
        )
    manifests = workdir / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "pool.yaml").write_text("---\n".join(docs))
    return manifests
