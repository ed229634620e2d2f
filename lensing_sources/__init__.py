"""The metric sources above the core: the Celery event stream and NVML GPUs (no Prometheus here)."""
