"""Reading manifest files: multi-document YAML/JSON into typed objects, with errors that name
the file and line.

Pure apart from reading the file it is given. Unknown kinds (Services, Deployments, …) are
skipped so a directory of real manifests can be pointed at as it is. InferenceObjective and
InferenceModelRewrite are read in both API groups (`llm-d.ai` and the deprecated
`inference.networking.x-k8s.io`); a legacy one is noted as deprecated, and where both groups
define the same namespace/name, the `llm-d.ai` object is the one in force (as in a cluster where
both CRDs are installed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sluice.sources.state import PodInfo
from sluice.util.located import line_of, syntax_error_line

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KNOWN_KINDS = ("InferencePool", "InferenceObjective", "InferenceModelRewrite", "Pod")


@dataclass(frozen=True)
class ManifestProblem:
    """One reason a file was rejected, located as precisely as we can."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ManifestError(Exception):
    def __init__(self, problems: list[ManifestProblem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class FileContents:
    """The objects one file contributes, keyed "namespace/name" per kind."""

    pools: dict[str, Any] = field(default_factory=dict)
    objectives: dict[str, Any] = field(default_factory=dict)
    rewrites: dict[str, Any] = field(default_factory=dict)
    pods: dict[str, PodInfo] = field(default_factory=dict)
    # Fields Kubernetes would silently prune (usually typos): reported, not fatal.
    warnings: list[ManifestProblem] = field(default_factory=list)
    # Objects in the deprecated API group: loaded, with a migration hint.
    deprecated: list[ManifestProblem] = field(default_factory=list)


def in_force(current: Any | None, candidate: Any) -> bool:
    """Whether `candidate` replaces `current` (same kind and namespace/name): an object of the
    preferred group is never displaced by one of the deprecated group."""
    from sluice.api.groups import is_deprecated

    if current is None:
        return True
    return not (is_deprecated(_group(candidate)) and not is_deprecated(_group(current)))


def _group(resource: Any) -> str:
    return str(resource.api_version).split("/")[0]


def manifest_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES and not p.name.startswith(".")
    )


def _documents(text: str) -> Iterator[tuple[yaml.Node, Any]]:
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            yield node, loader.construct_document(node)
    finally:
        loader.dispose()


def _expand_lists(node: yaml.Node, doc: Any) -> Iterator[tuple[yaml.Node, Any]]:
    """`kind: List` documents (what `kubectl get -o yaml` prints) hold their objects in items."""
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        items_node = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if getattr(key_node, "value", None) == "items":
                    items_node = value_node
        for i, item in enumerate(doc["items"]):
            item_node = items_node.value[i] if isinstance(items_node, yaml.SequenceNode) else node
            yield item_node, item
    else:
        yield node, doc


def read_manifest_file(path: Path, display: str | None = None) -> FileContents:
    """Parse one file; raises ManifestError naming file:line for every problem found."""
    from sluice.api import ResourceError, parse_resource, pruned_fields
    from sluice.api.groups import deprecation_hint, is_deprecated

    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([ManifestProblem(name, 1, f"cannot read file: {exc}")]) from None
    contents = FileContents()
    problems: list[ManifestProblem] = []
    try:
        documents = list(_documents(text))
    except yaml.YAMLError as exc:
        line, reason = syntax_error_line(exc)
        raise ManifestError([ManifestProblem(name, line, f"invalid YAML: {reason}")]) from None

    for doc_node, raw_doc in documents:
        for node, doc in _expand_lists(doc_node, raw_doc):
            if doc is None:
                continue
            line = node.start_mark.line + 1
            if not isinstance(doc, dict):
                problems.append(
                    ManifestProblem(
                        name, line, "a manifest must be a mapping with apiVersion and kind"
                    )
                )
                continue
            kind = doc.get("kind")
            if kind not in KNOWN_KINDS:
                continue
            raw_meta = doc.get("metadata")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            key = f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"
            if kind == "Pod":
                pod = PodInfo.from_manifest(doc)
                if not pod.name:
                    problems.append(
                        ManifestProblem(
                            name,
                            line_of(node, "metadata.name"),
                            "Pod metadata.name: Required value",
                        )
                    )
                    continue
                contents.pods[key] = pod
                continue
            doc = dict(doc)
            doc.setdefault("metadata", {})
            if isinstance(doc["metadata"], dict) and not doc["metadata"].get("namespace"):
                doc["metadata"] = {**doc["metadata"], "namespace": "default"}
            try:
                resource = parse_resource(doc)
            except ResourceError as exc:
                for field_path, message in exc.problems:
                    problems.append(
                        ManifestProblem(
                            name,
                            line_of(node, field_path),
                            f"{kind} {key}: {field_path}: {message}",
                        )
                    )
                continue
            for unknown in pruned_fields(doc):
                contents.warnings.append(
                    ManifestProblem(
                        name,
                        line_of(node, unknown),
                        f"{kind} {key}: {unknown}: unknown field, ignored (Kubernetes prunes it); "
                        "check its spelling",
                    )
                )
            target = {
                "InferencePool": contents.pools,
                "InferenceObjective": contents.objectives,
                "InferenceModelRewrite": contents.rewrites,
            }[kind]
            group = str(doc.get("apiVersion", "")).split("/")[0]
            if is_deprecated(group):
                contents.deprecated.append(ManifestProblem(name, line, deprecation_hint(kind)))
            previous = target.get(key)
            if previous is not None and _group(previous) == group:
                problems.append(ManifestProblem(name, line, f"duplicate {kind} {key} in one file"))
                continue
            if in_force(previous, resource):
                target[key] = resource
    if problems:
        raise ManifestError(problems)
    return contents
