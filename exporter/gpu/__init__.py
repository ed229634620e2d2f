"""GPU metrics from NVML, attributed to Celery work. Filled in by issue #4."""

from __future__ import annotations

import argparse

from exporter.sources import Source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the GPU collector (added to `lensing-metrics exporter`)."""


def build_source(args: argparse.Namespace) -> Source | None:
    """The GPU sampler source, or None when --gpu is off or NVML is absent and not asked for."""
    return None
