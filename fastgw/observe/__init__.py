"""Observability: Prometheus metrics across workers, the access log, trace context."""
