"""gRPC health (upstream's service names, leader-aware) and the Prometheus `/metrics` server.
May import `sluice.pipeline` and `sluice.extproc` (for the ext_proc service name)."""

from sluice.health.grpc_health import HealthServer, HealthServicer, serving_status
from sluice.health.metrics import MetricsServer

__all__ = ["HealthServer", "HealthServicer", "MetricsServer", "serving_status"]
