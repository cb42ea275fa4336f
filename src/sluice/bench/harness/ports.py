"""Free loopback ports, and waiting until something listens on one."""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import time
from contextlib import ExitStack

# Linux's ephemeral range starts at 32768: outgoing connections never take a port below it
_BELOW_EPHEMERAL = range(20_000, 32_000)
# Ports below it handed out by this process: each is free until its process binds it, so a
# second pick must not return it again (12 picks for three replicas collide ~0.6 % of the time).
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def held_port(host: str = "127.0.0.1") -> int:
    """A free port for a process that binds it later, after other work (a replacement that
    starts seconds after the test chose its ports): from 20000-32000, below the ephemeral
    range, where the machine's outgoing connections cannot take it meanwhile — a `free_port`
    chosen early was taken by a client's connection before the process bound it."""
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(_BELOW_EPHEMERAL)
        if port in _handed_out:  # free now, but promised to a process not yet started
            continue
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.bind((host, port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port below the ephemeral range on {host}")


def free_port_block(
    count: int, host: str = "127.0.0.1", *, avoid: int = -1, below_ephemeral: bool = False
) -> int:
    """The first of `count` consecutive ports that are all free right now (a busy machine's
    outgoing connections take ephemeral ports, so "the port after a free one" often is not).
    `avoid`: the first port of another block this one must not overlap. `below_ephemeral`:
    search 20000-32000, where outgoing connections take none meanwhile (long-held blocks)."""
    candidates = (
        range(_BELOW_EPHEMERAL.start, _BELOW_EPHEMERAL.stop - count, count)
        if below_ephemeral
        else (free_port(host) for _ in range(100))
    )
    for first in candidates:
        if avoid >= 0 and first < avoid + count and avoid < first + count:
            continue
        block = range(first, first + count)
        if below_ephemeral and not _handed_out.isdisjoint(block):
            continue
        try:
            with ExitStack() as stack:
                for port in block:
                    stack.enter_context(socket.socket()).bind((host, port))
        except OSError:
            continue
        if below_ephemeral:
            _handed_out.update(block)
        return first
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


def wait_for_port(
    host: str, port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 30
) -> None:
    """Blocks until something accepts on `host:port`; fails at once if `process` (the one
    expected to listen) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}: {process.args!r}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


async def wait_listening(
    ports: list[int], timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something accepts on every loopback port; fails at once if `process` has exited."""
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
