"""What the end-to-end tests share: free ports, waiting for listeners, pool manifests."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int) -> int:
    """The first of `count` consecutive ports that are all free right now (a busy machine's
    outgoing connections take ephemeral ports, so "the port after a free one" often is not)."""
    for _ in range(100):
        first = free_port()
        try:
            with ExitStack() as stack:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


async def wait_listening(
    ports: list[int], timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something accepts on every port; fails at once if `process` (the one expected to
    listen) has exited."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if process is not None and process.poll() is not None:
                    raise ProcessLookupError(
                        f"the process that should listen on {port} exited ({process.returncode})"
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing listens on {port}") from None
                await asyncio.sleep(0.05)


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
