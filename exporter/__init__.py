"""The Prometheus exporter: queue depth from the broker, Celery events, GPU utilization."""
