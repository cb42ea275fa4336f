"""The built-in plugins, in one explicit table keyed by upstream's type name; the config names a
type and `create` builds it. Plugin modules do not import this module (it imports them)."""

from __future__ import annotations

from collections.abc import Mapping

from sluice.scheduling.affinity import LoraAffinityScorer, SessionAffinityScorer
from sluice.scheduling.config import PluginSpec
from sluice.scheduling.filters import (
    HeaderBasedTestingFilter,
    MetricsDataSource,
    ModelServerProtocolMetrics,
)
from sluice.scheduling.framework import Plugin, PluginContext
from sluice.scheduling.parameters import read_parameters
from sluice.scheduling.pickers import MaxScorePicker, RandomPicker, WeightedRandomPicker
from sluice.scheduling.precise_scorer import PrecisePrefixCacheScorer
from sluice.scheduling.prefill_cost import PrefillCostScorer
from sluice.scheduling.prefix_scorer import PrefixCacheScorer
from sluice.scheduling.profile_handlers import SingleProfileHandler
from sluice.scheduling.scorers import (
    InFlightLoadScorer,
    KvCacheUtilizationScorer,
    QueueScorer,
    RunningRequestsScorer,
)

BUILTINS: Mapping[str, type[Plugin]] = {
    cls.type_name: cls
    for cls in (
        # filters
        HeaderBasedTestingFilter,
        # scorers
        QueueScorer,
        RunningRequestsScorer,
        KvCacheUtilizationScorer,
        InFlightLoadScorer,
        PrefixCacheScorer,
        PrecisePrefixCacheScorer,
        PrefillCostScorer,
        LoraAffinityScorer,
        SessionAffinityScorer,
        # pickers
        MaxScorePicker,
        RandomPicker,
        WeightedRandomPicker,
        # profile handlers
        SingleProfileHandler,
        # data layer (accepted; Sluice scrapes the engines itself)
        MetricsDataSource,
        ModelServerProtocolMetrics,
    )
}

__all__ = ["BUILTINS", "PluginContext", "create", "known_types", "plugin_kind"]


def plugin_kind(type_name: str) -> str | None:
    cls = BUILTINS.get(type_name)
    return cls.kind if cls else None


def plugin_class(type_name: str) -> type[Plugin] | None:
    return BUILTINS.get(type_name)


def known_types() -> list[str]:
    return sorted(BUILTINS)


def create(spec: PluginSpec, ctx: PluginContext) -> Plugin:
    """The plugin `spec` configures; a mistake in its parameters raises `ConfigError`."""
    cls = BUILTINS[spec.type]
    return cls.from_params(spec.name, read_parameters(spec, cls.Parameters), ctx)
