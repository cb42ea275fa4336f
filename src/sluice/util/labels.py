"""Metric label values that clients choose (model names, fairness ids), made safe to export.

Two rules, applied in this order:

1. **Printable**: a value is exported as valid UTF-8. Header bytes that were not UTF-8 arrive as
   lone surrogates (`surrogateescape`); they are exported with U+FFFD in their place, so one
   `\\xff` byte can never make the exposition unencodable. A value longer than
   `MAX_VALUE_CHARS` is exported as `other`.
2. **Bounded** (upstream's cardinality guard): each label admits `MAX_DISTINCT_VALUES` distinct
   values over the life of the process; later ones are exported as `other`. Model names and
   target model names share one guard, fairness ids have their own. Names an operator configured
   (InferenceModelRewrite sources and targets) are pinned: always exported as themselves, never
   counted against the cap.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

OVERFLOW = "other"
MAX_DISTINCT_VALUES = 1000
MAX_VALUE_CHARS = 128


def printable(value: str) -> str:
    """`value` as it can be exported: valid UTF-8 (U+FFFD for what was not), at most
    `MAX_VALUE_CHARS` characters (else `other`)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        if _only_escapes(value):  # bytes smuggled through `surrogateescape`: decode them again
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        else:  # any other lone surrogate
            value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value if len(value) <= MAX_VALUE_CHARS else OVERFLOW


def _only_escapes(value: str) -> bool:
    """Whether every surrogate in `value` is one `surrogateescape` made (U+DC80..U+DCFF)."""
    return all(0xDC80 <= ord(c) <= 0xDCFF for c in value if 0xD800 <= ord(c) <= 0xDFFF)


class BoundedLabel:
    """Upstream's guard for one label: the first `limit` distinct values are themselves, later
    ones `other`. A value once admitted stays admitted, so paired updates (a gauge's inc and dec)
    always land on the same series. The empty value passes unchanged and costs nothing."""

    def __init__(self, limit: int = MAX_DISTINCT_VALUES) -> None:
        self.limit = limit
        self._admitted: set[str] = set()
        self._pinned: set[str] = set()

    def bound(self, value: str) -> str:
        value = printable(value)
        if not value or value in self._pinned or value in self._admitted:
            return value
        if value == OVERFLOW or len(self._admitted) >= self.limit:
            return OVERFLOW
        self._admitted.add(value)
        return value

    def pin(self, value: str) -> None:
        """Always export `value` as itself, outside the cap (configured names)."""
        value = printable(value)
        if value and value != OVERFLOW:
            self._pinned.add(value)

    @property
    def admitted(self) -> int:
        return len(self._admitted)


class ClientLabels:
    """The guards one process shares across every metric with client-chosen labels."""

    def __init__(self, limit: int = MAX_DISTINCT_VALUES) -> None:
        self.models = BoundedLabel(limit)  # model_name and target_model_name together
        self.fairness_ids = BoundedLabel(limit)

    def model(self, name: str) -> str:
        return self.models.bound(name)

    def fairness_id(self, fairness_id: str) -> str:
        return self.fairness_ids.bound(fairness_id)

    def pin_models(self, names: Iterable[str]) -> None:
        for name in names:
            self.models.pin(name)
