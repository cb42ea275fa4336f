"""`sluice` entry point: dispatches to the subcommands."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print("sluice: commands are being built; see README.md", file=sys.stderr)
    return 0 if not args else 2
