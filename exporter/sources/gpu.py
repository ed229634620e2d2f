"""The GPU source as the exporter runs it: lensing_sources.gpu plus its collector."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from prometheus_client.registry import Collector

from exporter.collectors.gpu import GpuCollector
from lensing_sources import gpu
from lensing_sources.gpu import add_arguments

__all__ = ["GpuSource", "add_arguments", "build_source"]


class GpuSource(gpu.GpuSource):
    def collectors(self) -> Iterable[Collector]:
        return [GpuCollector(self.sampler)]


def build_source(args: argparse.Namespace, nvml: Any = None) -> GpuSource | None:
    """``nvml`` replaces the ``pynvml`` module (the tests pass a fake NVML)."""
    source = gpu.build_source(args, nvml)
    return None if source is None else GpuSource(source.sampler)
