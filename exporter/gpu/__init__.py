"""Compatibility: the GPU source lives in lensing_sources.gpu; ``exporter.gpu.celery_hook`` stays importable."""
