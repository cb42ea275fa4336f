"""One format for every configuration mistake: `file:line: field.path: message and fix`.

Shared by the config loader, the plugin parameters and the manifest reader, so an operator
reads every complaint the same way and an editor can jump to it."""

from __future__ import annotations

import re

import yaml


class ConfigError(ValueError):
    """A configuration mistake. `location` is "file:line" (None when the input had no file,
    e.g. a dict built in code), `path` the field (`flowControl.priorityBands[1].maxBytes`) and
    `message` what is wrong and how to fix it."""

    def __init__(self, path: str, message: str, location: str | None = None) -> None:
        self.path = path
        self.message = message
        self.location = location
        parts = [p for p in (location, path, message) if p]
        super().__init__(": ".join(parts))

    def at(self, location: str) -> ConfigError:
        """The same mistake, located (for errors raised before the line was known)."""
        return ConfigError(self.path, self.message, location)


_PATH_PART = re.compile(r"([^.\[\]]+)|\[([^\]]+)\]")


def line_of(node: yaml.Node, field_path: str) -> int:
    """The 1-based line of `field_path` (e.g. `spec.targetPorts[0].number`) inside a document
    node; the nearest existing ancestor when the field itself is missing."""
    line = node.start_mark.line + 1
    current: yaml.Node | None = node
    for match in _PATH_PART.finditer(field_path):
        key, index = match.group(1), match.group(2)
        if current is None:
            break
        if isinstance(current, yaml.MappingNode):
            name = key if key is not None else index
            nxt = None
            for key_node, value_node in current.value:
                if str(getattr(key_node, "value", None)) == name:
                    line = key_node.start_mark.line + 1
                    nxt = value_node
                    break
            current = nxt
        elif index is not None and index.isdigit() and isinstance(current, yaml.SequenceNode):
            i = int(index)
            if i < len(current.value):
                current = current.value[i]
                line = current.start_mark.line + 1
            else:
                current = None
        else:
            current = None
    return line


def syntax_error_line(exc: yaml.YAMLError) -> tuple[int, str]:
    """(1-based line, reason) of a YAML syntax error."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        return line, exc.problem or str(exc)
    return 1, str(exc)
