"""Filters: drop candidates before scoring."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ConfigDict

from sluice.datalayer.registry import EndpointState
from sluice.scheduling.framework import CycleState, DataPlugin, Filter
from sluice.scheduling.parameters import PluginParameters

TEST_SELECTION_HEADER = "test-epp-endpoint-selection"


class HeaderBasedTestingFilter(Filter):
    """Conformance only: keep endpoints whose IP or IP:port is listed in the header
    `test-epp-endpoint-selection`; no header → none (as upstream)."""

    type_name = "header-based-testing-filter"

    def filter(
        self, cycle: CycleState, candidates: Sequence[EndpointState]
    ) -> Sequence[EndpointState]:
        raw = cycle.request.headers.get(TEST_SELECTION_HEADER, "")
        wanted = {part.strip() for part in raw.split(",") if part.strip()}
        return [
            s for s in candidates if s.endpoint.address in wanted or s.endpoint.hostport in wanted
        ]


class _PassThroughDataPlugin(DataPlugin):
    class Parameters(PluginParameters):
        """Any parameters (upstream's), unread."""

        model_config = ConfigDict(extra="allow")


class MetricsDataSource(_PassThroughDataPlugin):
    """Upstream data-layer v2 scraper: accepted; Sluice's own scraper does the work."""

    type_name = "metrics-data-source"


class ModelServerProtocolMetrics(_PassThroughDataPlugin):
    """Upstream data-layer v2 extractor: accepted; Sluice's engine profiles do the work."""

    type_name = "model-server-protocol-metrics"
