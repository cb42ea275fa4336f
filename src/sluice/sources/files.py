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
            if old is not None and _holds_objects(old.contents) and not _holds_objects(contents):
                # An editor's or a ConfigMap's half-done write looks like this; dropping the
                # pool on it would stop all routing. Deleting the file is how to remove it.
                raise ManifestError(
                    [
                        ManifestProblem(
                            str(file),
                            1,
                            "the file is now empty (a truncated write?); to remove its objects "
                            "delete the file",
                        )
                    ]
                )
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
        for key, objective in contents.objectives.items():
            pool_ref = objective.spec.pool_ref if objective.spec is not None else None
            if pool_ref is not None and pool_ref.name != self.key.name:
                log.info(
                    "InferenceObjective ignored: its poolRef names another pool",
                    objective=key,
                    file=str(file),
                    pool_ref=pool_ref.name,
                    this_pool=self.key.name,
                )
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
        origin: dict[tuple[str, str], Path] = {}  # (kind, key) → the file it came from
        for file in sorted(self._files):
            contents = self._files[file].contents
            snapshot.pools.update(contents.pools)
            for kind, table, found in (
                ("InferenceObjective", snapshot.objectives, contents.objectives),
                ("InferenceModelRewrite", snapshot.rewrites, contents.rewrites),
            ):
                for key, resource in found.items():
                    current = table.get(key)
                    if current is not None and _group(current) == _group(resource):
                        # The same object in two files: neither silently wins; the first file
                        # (in name order) stays in force until one is removed.
                        log.error(
                            f"duplicate {kind} {key}",
                            kept=str(origin[(kind, key)]),
                            ignored=str(file),
                            fix="keep it in one file",
                        )
                        continue
                    if in_force(current, resource):
                        table[key] = resource
                        origin[(kind, key)] = file
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


def _holds_objects(contents: FileContents) -> bool:
    return bool(contents.pools or contents.objectives or contents.rewrites or contents.pods)


def _group(resource: Any) -> str:
    return str(getattr(resource, "api_version", "")).split("/")[0]
