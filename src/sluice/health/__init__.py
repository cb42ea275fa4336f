"""gRPC health service and the Prometheus metrics endpoint."""
