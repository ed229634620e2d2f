"""lensing-metrics: Celery queue depth, events and GPU metrics, and the metrics APIs the HPA reads."""

__version__ = "0.1.0"
