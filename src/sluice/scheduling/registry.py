"""Plugins are registered by upstream's type name; config instantiates them by that name."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sluice.scheduling.framework import Plugin
from sluice.scheduling.params import Params


@dataclass(slots=True)
class PluginContext:
    """What a plugin may receive at construction besides its parameters."""

    rng: random.Random = field(default_factory=random.Random)


PluginFactory = Callable[[str, Params, PluginContext], Plugin]
_FACTORIES: dict[str, tuple[str, PluginFactory]] = {}

P = TypeVar("P", bound=type[Plugin])


def register(type_name: str) -> Callable[[P], P]:
    """Class decorator: the class gets `type_name` and is built via `from_params`."""

    def wrap(cls: P) -> P:
        cls.type_name = type_name
        _FACTORIES[type_name] = (cls.kind, cls.from_params)  # type: ignore[attr-defined]
        return cls

    return wrap


def plugin_kind(type_name: str) -> str | None:
    entry = _FACTORIES.get(type_name)
    return entry[0] if entry else None


def known_types() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def create(type_name: str, name: str, params: Params, ctx: PluginContext) -> Plugin:
    _load_builtins()
    return _FACTORIES[type_name][1](name, params, ctx)


def _load_builtins() -> None:
    # Importing the modules runs their @register decorators.
    from sluice.scheduling import (  # noqa: F401
        affinity,
        filters,
        pickers,
        precise_scorer,
        prefill_cost,
        prefix_scorer,
        profile_handlers,
        scorers,
    )
