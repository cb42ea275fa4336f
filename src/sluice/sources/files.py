"""The manifest-directory source: `--resources PATH` instead of a cluster.

Polls the files' (mtime, size) every `poll_interval` (no inotify dependency; a few stat calls a
second cost nothing) and re-reads only the files that changed. A file that fails to parse keeps
its last good contents in force — nothing is dropped — and its problems are logged with
file:line. A file that is deleted takes its objects with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.logs import get_logger
from sluice.sources.manifests import (
    FileContents,
    ManifestError,
    ManifestProblem,
    in_force,
    manifest_files,
    read_manifest_file,
)
from sluice.sources.state import PoolKey, PoolState, Snapshot, build_state

log = get_logger("sources.files")


@dataclass
class _FileEntry:
    signature: tuple[int, int]
    contents: FileContents  # the last good contents
    problems: list[ManifestProblem]


class ManifestDirectorySource:
    def __init__(
        self,
        path: str | Path,
        key: PoolKey,
        on_state: Callable[[PoolState], None],
        *,
        poll_interval: float = 0.25,
        static_pools: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        self.key = key
        self.on_state = on_state
        self.poll_interval = poll_interval
        self._files: dict[Path, _FileEntry] = {}
        self._state: PoolState | None = None
        # Standalone mode: pools made from flags rather than read from the files.
        self._static_pools = dict(static_pools or {})

    @property
    def state(self) -> PoolState | None:
        return self._state

    @property
    def problems(self) -> list[ManifestProblem]:
        """Problems of files whose latest version was rejected."""
        return [p for entry in self._files.values() for p in entry.problems]

    def refresh(self) -> bool:
        """Re-read changed files; publish a new state if anything changed. Returns whether the
        state changed."""
        if not self.path.exists() and not self._files:
            log.error(
                "resources path does not exist",
                path=str(self.path),
                fix="pass an existing file or directory to --resources",
            )
        seen: set[Path] = set()
        changed = False
        for file in manifest_files(self.path):
            seen.add(file)
            try:
                stat = file.stat()
            except OSError:
                continue
            signature = (stat.st_mtime_ns, stat.st_size)
            entry = self._files.get(file)
            if entry is not None and entry.signature == signature:
                continue
            changed |= self._reload(file, signature, entry)
        for gone in set(self._files) - seen:
            del self._files[gone]
            log.info("manifest removed", file=str(gone))
            changed = True
        if changed or self._state is None:
            state = build_state(self.key, self._snapshot())
            if state != self._state:
                self._state = state
                self.on_state(state)
                return True
        return False

    def _reload(self, file: Path, signature: tuple[int, int], old: _FileEntry | None) -> bool:
        try:
            contents = read_manifest_file(file)
        except ManifestError as exc:
            for problem in exc.problems:
                log.error(
                    "manifest rejected; the last good version stays in force", problem=str(problem)
                )
            kept = old.contents if old is not None else FileContents()
            self._files[file] = _FileEntry(signature, kept, exc.problems)
            return False
        self._files[file] = _FileEntry(signature, contents, [])
        for warning in contents.warnings:
            log.warning("manifest field ignored", problem=str(warning))
        for note in contents.deprecated:
            log.warning("manifest uses a deprecated API group", problem=str(note))
        log.info(
            "manifest loaded",
            file=str(file),
            pools=len(contents.pools),
            objectives=len(contents.objectives),
            rewrites=len(contents.rewrites),
            pods=len(contents.pods),
        )
        return True

    def _snapshot(self) -> Snapshot:
        snapshot = Snapshot()
        snapshot.pools.update(self._static_pools)
        for file in sorted(self._files):
            contents = self._files[file].contents
            snapshot.pools.update(contents.pools)
            for table, found in (
                (snapshot.objectives, contents.objectives),
                (snapshot.rewrites, contents.rewrites),
            ):
                for key, resource in found.items():
                    if in_force(table.get(key), resource):
                        table[key] = resource
            snapshot.pods.update(contents.pods)
        return snapshot

    async def run(self) -> None:
        """Poll forever (cancel to stop)."""
        while True:
            try:
                self.refresh()
            except Exception:  # a source must never die from one bad scan
                log.error("manifest scan failed", exc=True)
            await asyncio.sleep(self.poll_interval)
