"""`--enable-cert-reload`: a certificate rotated in `--cert-path` is served by the running
ext_proc server to the connections that come after it, on every transport, without a restart
(issue #17: the flag was accepted and never reloaded). Real TLS handshakes on loopback."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest

from certs import common_name, make_pair
from sluice.cli.flags import FlagError
from sluice.cli.serve_options import parse_serve_options

from .conftest import StartApp


async def served_name(port: int) -> str:
    """The common name of the certificate a new connection is shown."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return common_name(der)
    finally:
        writer.close()


def rotate(directory: Path, name: str) -> None:
    """As a Secret update would: the new files replace the old ones whole."""
    pair = make_pair(name)[0]
    staged = pair.write(directory / "staged")
    for file in ("tls.crt", "tls.key"):
        os.replace(staged / file, directory / file)


@pytest.mark.parametrize("transport", ["h2", "hyper", "grpc"])
async def test_a_rotated_certificate_is_served_without_a_restart(
    start_app: StartApp, tmp_path: Path, transport: str
) -> None:
    certs = make_pair("first")[0].write(tmp_path / "certs")
    port = await start_app(
        f"--cert-path={certs}", "--enable-cert-reload", f"--ext-proc-transport={transport}"
    )
    assert await served_name(port) == "first"
    rotate(certs, "second")
    for _ in range(100):  # the h2 transports look every second; grpc at every handshake
        if await served_name(port) == "second":
            break
        await asyncio.sleep(0.1)
    assert await served_name(port) == "second"


async def test_without_the_flag_the_first_certificate_stays(
    start_app: StartApp, tmp_path: Path
) -> None:
    certs = make_pair("first")[0].write(tmp_path / "certs")
    port = await start_app(f"--cert-path={certs}")
    rotate(certs, "second")
    await asyncio.sleep(1.5)  # longer than the reload interval
    assert await served_name(port) == "first"


def test_reload_without_a_certificate_directory_is_refused() -> None:
    with pytest.raises(FlagError, match="--enable-cert-reload reloads the pair in --cert-path"):
        parse_serve_options(["--pool-name=p", "--enable-cert-reload"])
