"""Typed, strict access to a plugin's `parameters`: unknown keys and wrong types are errors
that name the config line."""

from __future__ import annotations

from collections.abc import Mapping
from math import isfinite
from typing import Any

from sluice.util.located import ConfigError

__all__ = ["ConfigError", "Params"]


class Params:
    """One plugin's parameters. Read every accepted key, then call `finish()`."""

    def __init__(
        self,
        values: Mapping[str, Any],
        *,
        where: str = "parameters",
        lines: Mapping[str, str] | None = None,
        location: str = "<config>",
    ) -> None:
        self._values = dict(values)
        self._where = where
        self._lines = dict(lines or {})
        self._location = location
        self._read: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        location = self._lines.get(key, self._location)
        return ConfigError(f"{self._where}.{key}", message, location)

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._values.get(key)

    def get_int(self, key: str, default: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        return value

    def get_float(self, key: str, default: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not isfinite(value):
            raise self.error(key, f"expected a number, got {value!r}")
        return float(value)

    def get_bool(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def get_str(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        return value

    def section(self, key: str) -> Params:
        """A nested mapping's parameters (empty when absent), read and finished like these; its
        errors name ``where.key.field`` and the line of ``key``."""
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {value!r}")
        location = self._lines.get(key, self._location)
        return Params(value, where=f"{self._where}.{key}", location=location)

    def raw(self) -> dict[str, Any]:
        """All values, unchecked (for pass-through plugins)."""
        self._read.update(self._values)
        return dict(self._values)

    def finish(self, accepted_hint: str = "") -> None:
        unknown = [k for k in self._values if k not in self._read]
        if unknown:
            known = ", ".join(sorted(self._read)) or "none"
            raise self.error(unknown[0], f"unknown parameter {unknown[0]!r}; known: {known}")
