"""Assembling the application from flags: every start-up mistake names the flag or file and the
fix; upstream's flags take effect."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

import pytest

from sluice.app import App, AppError
from sluice.bench.harness.ports import free_port
from sluice.cli.serve_options import parse_serve_options
from sluice.sources.files import ManifestDirectorySource

QUICKSTART = Path(__file__).resolve().parents[1] / "src" / "sluice" / "quickstart"


def app(*flags: str) -> App:
    standalone = any(f.startswith("--endpoint-selector") for f in flags)
    pool = [] if standalone else ["--pool-name=quickstart"]
    return App(parse_serve_options([*pool, *flags]))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--resources=/no/such/dir"], "--resources /no/such/dir: no such file or directory"),
        (["--config-file=/no/such.yaml"], "--config-file /no/such.yaml: cannot read it"),
        (["--config-text=plugins: [{type: nope}]"], "unknown plugin type 'nope'"),
        (
            [f"--resources={QUICKSTART}", "--endpoint-selector=app"],
            "--endpoint-selector: 'app' is not key=value",
        ),
        (["--total-queued-requests-metric=not a metric"], "metric flags:"),
        (["--pool-group=inference.networking.x-k8s.io"], "use --pool-group inference.networking"),
    ],
)
def test_start_up_mistakes_name_the_flag_and_the_fix(flags: list[str], message: str) -> None:
    with pytest.raises(AppError, match=message.replace("[", r"\[")):
        app(*flags)


def test_a_yaml_syntax_error_in_the_config_file_names_the_file_and_line(tmp_path: Path) -> None:
    """Issue #15 item 10: a YAML syntax error in `--config-file` had no line."""
    bad = tmp_path / "epp.yaml"
    bad.write_text("plugins:\n- type: queue-scorer\n  parameters: {a: [1, 2}\n")
    with pytest.raises(AppError, match=rf"^{re.escape(str(bad))}:3: invalid YAML: "):
        app(f"--resources={QUICKSTART}", f"--config-file={bad}")


def test_the_deprecated_metrics_port_applies_to_a_single_port_pool(tmp_path: Path) -> None:
    (tmp_path / "pool.yaml").write_text(
        (QUICKSTART / "pool.yaml")
        .read_text()
        .replace("  - number: 8002\n  - number: 8003\n  - number: 8004\n", "")
    )
    assembled = app(f"--resources={tmp_path}", "--model-server-metrics-port=9400")
    source = ManifestDirectorySource(tmp_path, assembled.key, assembled.on_state)
    source.refresh()
    [state] = assembled.registry.snapshot()
    assert state.endpoint.hostport == "127.0.0.1:8001"
    assert state.endpoint.metrics_hostport == "127.0.0.1:9400"


def test_with_several_target_ports_each_rank_is_scraped_on_its_own_port() -> None:
    assembled = app(f"--resources={QUICKSTART}", "--model-server-metrics-port=9400")
    source = ManifestDirectorySource(QUICKSTART, assembled.key, assembled.on_state)
    source.refresh()
    ports = sorted(s.endpoint.metrics_hostport for s in assembled.registry.snapshot())
    assert ports == [f"127.0.0.1:{p}" for p in (8001, 8002, 8003, 8004)]


async def test_a_busy_port_is_one_line_naming_the_flag() -> None:
    """Issue #15 item 10: a busy port printed a 45-line traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        sluice = app(
            f"--resources={QUICKSTART}",
            "--grpc-host=127.0.0.1",
            f"--metrics-port={busy}",
            "--grpc-health-port=0",
            "--grpc-port=0",
            "--disable-extproc",
            "--metrics-endpoint-auth=false",
        )
        with pytest.raises(AppError) as refused:
            await sluice.run_forever()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"--metrics-port={busy}: cannot listen on 127.0.0.1:{busy}")
    assert "another --metrics-port" in message


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP `port` (Linux /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, port_hex = local.partition(":")
                if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    # 32-bit words in host order (little-endian here)
                    raw = b"".join(
                        bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8)
                    )
                    ip = ipaddress.ip_address(raw)
                    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
                    found.add(str(mapped or ip))  # grpc core binds ::ffff:127.0.0.1 for 127.0.0.1
    return found


async def test_the_listen_address_flag_binds_every_server_to_it() -> None:
    """Issue #15 item 6: the ext_proc port was bound to 0.0.0.0 with no way to choose. The
    default stays upstream's (a gateway reaches the Pod IP; docs/security.md), and
    `--grpc-host` binds ext_proc, health and metrics to the one address given."""
    assert parse_serve_options(["--pool-name=p"]).grpc_host == "0.0.0.0"
    ports = {name: free_port() for name in ("grpc", "grpc-health", "metrics")}
    sluice = app(
        f"--resources={QUICKSTART}",
        "--grpc-host=127.0.0.1",
        "--secure-serving=false",
        *(f"--{name}-port={port}" for name, port in ports.items()),
    )
    await sluice.start()
    try:
        for port in ports.values():
            assert listening_addresses(port) == {"127.0.0.1"}, port
    finally:
        await sluice.stop()
