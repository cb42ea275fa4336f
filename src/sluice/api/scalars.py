"""The scalar kinds a Sluice config holds, each a plain function `value -> parsed` that raises
`ValueError` with the fix, and the same function as a pydantic field type (`Annotated`), so the
models and code that builds configs by hand share one wording; and `Strict`, the base of every
config model (the YAML's sections in `sluice.config`, the plugins' parameters in
`sluice.scheduling`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, PlainValidator
from pydantic.alias_generators import to_camel

from sluice.api.rules import rule_error
from sluice.util import durations

T = TypeVar("T")


class Strict(BaseModel):
    """Frozen; an unknown field is an error; fields are read by their camelCase wire names."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=False, frozen=True
    )


def field_type(parse: Callable[[Any], T]) -> PlainValidator:
    """`parse` as a pydantic validator: its ValueError becomes the field's error message."""

    def validate(value: Any) -> T:
        try:
            return parse(value)
        except ValueError as exc:
            raise rule_error(str(exc)) from None

    return PlainValidator(validate)


def overlay(target: T, model: object, fields: dict[str, str]) -> T:
    """`target` (a dataclass) with each field of `model` that was written (not None) copied
    onto its counterpart named in `fields`."""
    written = {dst: getattr(model, src) for src, dst in fields.items()}
    return replace(target, **{k: v for k, v in written.items() if v is not None})  # type: ignore[type-var]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true/false, got {value!r}")
    return value


def text(value: Any, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got {value!r}")
    return value


def name(value: Any) -> str:
    if not text(value, "a non-empty string"):
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def finite(value: Any, what: str = "a number") -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"expected {what}, got {value!r}")
    return float(value)


def non_negative(value: Any) -> float:
    number = finite(value, "a number >= 0")
    if number < 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return number


def positive(value: Any) -> float:
    if not _is_number(value) or not 0 < value < 1e12:
        raise ValueError(f"expected a number > 0, got {value!r}")
    return float(value)


def cap(value: Any) -> int:
    """A Sluice cap: a whole number, 0 turning it off."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer >= 0 (0 turns it off), got {value!r}")
    return value


def duration(value: Any) -> float:
    """Seconds from a number (seconds) or a Go-style duration: "30s", "500ms", "1m30s"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration like '30s', got {value!r}")
    try:
        seconds = float(value) if not isinstance(value, str) else durations.parse_duration(value)
    except ValueError:
        raise ValueError(
            f"cannot read duration {value!r}; write e.g. '30s', '500ms' or '1m30s'"
        ) from None
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"duration must be >= 0, got {value!r}")
    return seconds


_QUANTITY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:[eE](\d+))?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_QUANTITY_UNITS = {
    None: 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def quantity(value: Any) -> int:
    """A non-negative integer from an int or a Kubernetes quantity ("1Gi", "500M", "1e6")."""
    if isinstance(value, bool):
        raise ValueError(f"expected a count or quantity, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        match = _QUANTITY.match(value.strip())
        if not match:
            raise ValueError(
                f"cannot read quantity {value!r}; write an integer or e.g. '500M', '1Gi'"
            )
        digits, exponent, suffix = match.groups()
        number = float(digits) * (10 ** int(exponent) if exponent else 1)
        number *= _QUANTITY_UNITS[suffix]
    else:
        raise ValueError(f"expected a count or quantity, got {value!r}")
    if number < 0 or not math.isfinite(number) or number != int(number):
        raise ValueError(f"must be a whole number >= 0, got {value!r}")
    return int(number)


Int = Annotated[int, field_type(integer)]
Bool = Annotated[bool, field_type(boolean)]
Name = Annotated[str, field_type(name)]
Text = Annotated[str, field_type(text)]
Number = Annotated[float, field_type(finite)]
NonNegative = Annotated[float, field_type(non_negative)]
Positive = Annotated[float, field_type(positive)]
Cap = Annotated[int, field_type(cap)]
Seconds = Annotated[float, field_type(duration)]
Quantity = Annotated[int, field_type(quantity)]
