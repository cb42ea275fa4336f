"""Random strings that match a regular expression, fast: walk the parsed pattern (`re._parser`)
and pick a branch, a repeat count and a character at each step. Enough for the CRD patterns
(literals, classes, ranges, groups, alternation, `* + ?`, anchors)."""

from __future__ import annotations

import random
import re._constants as c  # type: ignore[import-not-found]
import re._parser as parser  # type: ignore[import-not-found]
from functools import cache
from typing import Any

_MAX_REPEAT = 8


@cache
def _parsed(pattern: str) -> Any:
    return parser.parse(pattern)


def random_match(pattern: str, rng: random.Random) -> str:
    return "".join(_emit(_parsed(pattern), rng))


def _emit(items: Any, rng: random.Random) -> list[str]:
    out: list[str] = []
    for op, arg in items:
        if op is c.LITERAL:
            out.append(chr(arg))
        elif op is c.IN:
            out.append(_pick_from_class(arg, rng))
        elif op is c.SUBPATTERN:
            out += _emit(arg[-1], rng)
        elif op is c.BRANCH:
            out += _emit(rng.choice(arg[1]), rng)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT):
            low, high, body = arg
            count = rng.randint(low, min(high, low + rng.choice([1, 2, _MAX_REPEAT])))
            for _ in range(count):
                out += _emit(body, rng)
        elif op is c.AT:
            continue  # anchors emit nothing
        else:
            raise AssertionError(f"regex construct not supported by the generator: {op}")
    return out


def _pick_from_class(members: Any, rng: random.Random) -> str:
    choices: list[tuple[int, int]] = []
    for op, arg in members:
        if op is c.LITERAL:
            choices.append((arg, arg))
        elif op is c.RANGE:
            choices.append(arg)
        else:
            raise AssertionError(f"class member not supported by the generator: {op}")
    low, high = rng.choice(choices)
    return chr(rng.randint(low, high))
