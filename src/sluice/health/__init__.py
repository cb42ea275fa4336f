"""gRPC health (upstream's service names, leader-aware) and the Prometheus `/metrics` server.
May import `sluice.director.contract`, `sluice.extproc` (for the ext_proc service name) and
`sluice.net`."""

from sluice.health.grpc_health import (
    GrpcHealthService,
    HealthServer,
    HealthServicer,
    serving_status,
)
from sluice.health.metrics import MetricsServer

__all__ = ["GrpcHealthService", "HealthServer", "HealthServicer", "MetricsServer", "serving_status"]
