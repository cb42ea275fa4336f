"""A flag parser with Go's `flag` semantics, so upstream's Helm chart arguments work unchanged.

Accepted forms: `-name`, `--name`, `--name=value`, `--name value` (not for booleans), booleans
as `--name`, `--name=true|false`. `--` ends the flags. Every mistake raises `FlagError` with a
message that names the flag and shows an accepted form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sluice.util.durations import parse_duration


class FlagError(ValueError):
    pass


@dataclass(frozen=True)
class Flag:
    """One flag, with what values it accepts: `choices`, or a lower bound (`above`: strictly,
    `at_least`) shown with `example` when refused; kind `port` is an int in 0-65535. `no_op`:
    accepted for compatibility and ignored, and why (the flag-table test requires a reason for
    every flag nothing reads)."""

    name: str
    kind: str  # bool | str | int | float | duration | port
    default: Any
    help: str
    aliases: tuple[str, ...] = ()
    group: str = "general"
    deprecated: str = ""
    choices: tuple[str, ...] = ()
    above: float | None = None
    at_least: float | None = None
    example: str = ""
    no_op: str = ""

    def check(self, value: Any) -> None:
        """Refuses a value that parses but cannot work, naming the flag and an accepted form."""
        if self.choices and value not in self.choices:
            shown = [c for c in self.choices if c]
            allowed = ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]
            raise FlagError(f"--{self.name} must be {allowed} (not {value!r})")
        bound = ""
        if self.kind == "port" and not 0 <= value <= 65535:
            bound = "0-65535"
        elif self.above is not None and not self.above < value < float("inf"):
            bound = f"above {self.above:g}"
        elif self.at_least is not None and not self.at_least <= value < float("inf"):
            bound = f"{self.at_least:g} or more"
        if bound:
            example = f" (e.g. --{self.name}={self.example})" if self.example else ""
            raise FlagError(f"--{self.name}={value}: must be {bound}{example}")


_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def _convert(flag: Flag, raw: str) -> Any:
    converters: dict[str, Callable[[str], Any]] = {
        "str": str,
        "int": int,
        "port": int,
        "float": float,
        "duration": parse_duration,
    }
    if flag.kind == "bool":
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise FlagError(f"invalid boolean value {raw!r} for flag --{flag.name}: use true or false")
    try:
        return converters[flag.kind](raw)
    except ValueError as exc:
        example = {
            "int": "an integer",
            "port": "an integer",
            "float": "a number",
            "duration": "50ms, 2s or 1m30s",
        }
        raise FlagError(
            f"invalid value {raw!r} for flag --{flag.name}: expected {example.get(flag.kind)}"
            f" ({exc})"
        ) from None


class FlagSet:
    def __init__(self, program: str, flags: Sequence[Flag]):
        self.program = program
        self.flags = list(flags)
        self._by_name: dict[str, Flag] = {}
        for flag in self.flags:
            for name in (flag.name, *flag.aliases):
                self._by_name[name] = flag

    def parse(self, argv: Sequence[str]) -> tuple[dict[str, Any], list[str], set[str]]:
        """Returns (values by flag name with defaults filled, positional args, names set)."""
        values = {flag.name: flag.default for flag in self.flags}
        explicitly_set: set[str] = set()
        positional: list[str] = []
        i = 0
        while i < len(argv):
            token = argv[i]
            i += 1
            if token == "--":
                positional.extend(argv[i:])
                break
            if not token.startswith("-") or token == "-":
                positional.append(token)
                continue
            body = token.lstrip("-")
            name, has_value, raw = body.partition("=")
            flag = self._by_name.get(name)
            if flag is None:
                raise FlagError(self._unknown(name))
            if flag.kind == "bool":
                value = _convert(flag, raw) if has_value else True
            else:
                if not has_value:
                    if i >= len(argv):
                        raise FlagError(f"flag needs an argument: --{flag.name}")
                    raw = argv[i]
                    i += 1
                value = _convert(flag, raw)
            flag.check(value)
            values[flag.name] = value
            explicitly_set.add(flag.name)
        return values, positional, explicitly_set

    def _unknown(self, name: str) -> str:
        close = sorted(n for n in self._by_name if _similar(n, name))[:3]
        hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
        return f"unknown flag --{name}{hint} (see `{self.program} --help`)"

    def usage(self) -> str:
        lines = [f"usage: {self.program} [flags]", ""]
        group = None
        for flag in self.flags:
            if flag.group != group:
                group = flag.group
                lines.append(f"{group}:")
            names = ", ".join("--" + n for n in (flag.name, *flag.aliases))
            default = "" if flag.default in (None, "", False) else f" (default {flag.default})"
            note = f" [deprecated: {flag.deprecated}]" if flag.deprecated else ""
            note += f" [accepted, no effect: {flag.no_op}]" if flag.no_op else ""
            lines.append(f"  {names} {flag.kind}\n      {flag.help}{default}{note}")
        return "\n".join(lines)


def _similar(a: str, b: str) -> bool:
    if a.startswith(b) or b.startswith(a):
        return True
    shared = set(a.split("-")) & set(b.split("-"))
    return len(shared) >= 2 or (len(shared) == 1 and len(b.split("-")) == 1)
