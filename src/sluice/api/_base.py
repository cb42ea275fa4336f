"""The building blocks every resource model shares: the model base class, the string patterns
of the official CRDs, and the scalar types (bounded integers, RFC 3339 timestamps)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from sluice.api.rules import invalid_value, type_error

# Patterns copied verbatim from the official v1.3.0 CRDs. They are anchored, and pydantic's
# (Rust) regex engine treats `$` as end-of-text like Go's, so "a\n" does not match "^a$".
GROUP_PATTERN = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KIND_PATTERN = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
CONTROLLER_NAME_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


class KubeModel(BaseModel):
    """Base of every resource part: camelCase on the wire, snake_case in Python.

    `strict` because the API server does not coerce: `"80"` is not a port and `1` is not a label
    value. `extra="ignore"` is Kubernetes pruning: a structural schema silently drops fields it
    does not know (see `sluice.api.pruned_fields` to report them instead)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        strict=True,
        extra="ignore",
        use_attribute_docstrings=True,
        validate_default=False,
    )


def _integral_float_to_int(value: Any) -> Any:
    # JSON has one number type: the API server accepts 8080.0 where an integer is expected.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _within_int64(value: int) -> int:
    # Every `type: integer` is stored as a Go int64: larger numbers cannot exist in a cluster.
    if not INT64_MIN <= value <= INT64_MAX:
        raise invalid_value(value, "must fit in a 64-bit signed integer")
    return value


def _within_int32(value: int) -> int:
    # `format: int32` without bounds: the API server still checks the value fits the format.
    if not INT32_MIN <= value <= INT32_MAX:
        raise invalid_value(value, "must be of type int32")
    return value


# Bounds go in `Field` *before* the validators so that pydantic keeps them in the core schema
# (and in the generated CRD as minimum/maximum).
AcceptIntegralFloat = BeforeValidator(_integral_float_to_int)
WithinInt64 = AfterValidator(_within_int64)
WithinInt32 = AfterValidator(_within_int32)
_INT32 = {"format": "int32"}
_INT64 = {"format": "int64"}

Integer = Annotated[int, AcceptIntegralFloat, WithinInt64]
"""A plain `type: integer` (no format)."""
PortNumber = Annotated[int, Field(ge=1, le=65535, json_schema_extra=_INT32), AcceptIntegralFloat]
Weight = Annotated[int, Field(ge=1, le=1000000, json_schema_extra=_INT32), AcceptIntegralFloat]
Generation = Annotated[int, Field(ge=0, json_schema_extra=_INT64), AcceptIntegralFloat, WithinInt64]
Int64 = Annotated[int, Field(json_schema_extra=_INT64), AcceptIntegralFloat, WithinInt64]
Int32 = Annotated[int, Field(json_schema_extra=_INT32), AcceptIntegralFloat, WithinInt32]
"""`type: integer, format: int32` with no explicit bounds."""

# The API server's `date-time` format (go-openapi strfmt): a full date, `T`, a time with
# optional fraction, and a mandatory zone; letters are case-insensitive.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)


def _parse_date_time(value: Any) -> Any:
    if isinstance(value, datetime):
        # A YAML timestamp without a zone is read as naive; Kubernetes times are UTC.
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise type_error(value, "string")
    if _RFC3339.fullmatch(value):
        try:
            return datetime.fromisoformat(value.upper())
        except ValueError:
            pass  # e.g. 2024-02-30: matches the shape, is not a date
    raise invalid_value(value, "must be of type date-time")


DateTime = Annotated[
    datetime,
    BeforeValidator(_parse_date_time),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
