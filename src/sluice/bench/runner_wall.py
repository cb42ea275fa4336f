"""Wall-clock mode (real sockets: Sluice's proxy or Envoy + ext_proc in front of `sluice sim`
engines, and the PyPI routers as peers) is not built yet; this entry point says so plainly
instead of pretending. Virtual time covers every scenario meanwhile."""

from __future__ import annotations

import argparse
import shutil
import sys

PEERS = ("vllm-router", "sglang-router", "smg")


def installed_peers() -> dict[str, bool]:
    """Which peer routers are on PATH (wall mode would run them when present)."""
    return {name: shutil.which(name) is not None for name in PEERS}


def main_wall(names: list[str], args: argparse.Namespace) -> int:
    peers = ", ".join(
        f"{n}: {'installed' if ok else 'absent'}" for n, ok in installed_peers().items()
    )
    print(
        "sluice bench --mode wall: not implemented yet (virtual time only for now); "
        f"peer routers: {peers}",
        file=sys.stderr,
    )
    return 2
