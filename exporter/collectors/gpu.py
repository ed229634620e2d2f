"""The GPU metric families, built from the sampler's last snapshot (defined in lensing_core.catalog.GPU)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from lensing_core import catalog
from lensing_sources.gpu.sampler import GpuSampler, GpuState

_GPU_LABELS = ["gpu", "uuid", "model"]
_POD_LABELS = list(catalog.GPU["gpu_info"].optional_labels)

# snapshot field -> gauge
_VALUES = (
    ("utilization", "gpu_utilization_ratio"),
    ("memory_utilization", "gpu_memory_utilization_ratio"),
    ("memory_used", "gpu_memory_used_bytes"),
    ("memory_total", "gpu_memory_total_bytes"),
    ("temperature", "gpu_temperature_celsius"),
    ("power", "gpu_power_watts"),
    ("power_limit", "gpu_power_limit_watts"),
    ("sm_clock", "gpu_sm_clock_hertz"),
)


class GpuCollector(Collector):
    """Per-GPU series exist only for cards read in the last cycle, and per field only where the card
    reports it. While NVML is down only ``nvml_up 0`` and the error counts are there."""

    def __init__(self, sampler: GpuSampler) -> None:
        self.sampler = sampler

    def describe(self) -> Iterator[Metric]:
        return catalog.describe("exporter-gpu")

    def collect(self) -> Iterator[Metric]:
        snapshot = self.sampler.snapshot
        up = catalog.gauge("nvml_up")
        up.add_metric([], 1.0 if snapshot.up else 0.0)
        yield up
        errors = catalog.counter("nvml_errors_total")
        for reason, count in sorted(snapshot.errors.items()):
            errors.add_metric([reason], count)
        yield errors

        pods = any(g.allocation is not None for g in snapshot.gpus)
        labels = _GPU_LABELS + (_POD_LABELS if pods else [])

        def key(gpu: GpuState) -> list[str]:
            base = [str(gpu.device.index), gpu.device.uuid, gpu.device.model]
            return base + list(gpu.allocation or ("", "", "")) if pods else base

        for field, name in _VALUES:
            family = catalog.gauge(name, labels)
            for gpu in snapshot.gpus:
                if field in gpu.values:
                    family.add_metric(key(gpu), gpu.values[field])
            yield family

        busy = catalog.counter("gpu_busy_seconds_total", labels)
        idle = catalog.counter("gpu_idle_allocated_seconds_total", labels)
        ecc = catalog.counter("gpu_ecc_uncorrected_errors_total", labels)
        throttled = catalog.gauge("gpu_throttled", [*labels, "reason"])
        info = catalog.gauge("gpu_info", [*labels, "driver_version"])
        xid = catalog.counter("gpu_xid_errors_total", [*labels, "xid"])
        for gpu in snapshot.gpus:
            k = key(gpu)
            info.add_metric([*k, snapshot.driver_version], 1.0)
            if gpu.busy_seconds is not None:
                busy.add_metric(k, gpu.busy_seconds)
            if gpu.idle_allocated_seconds is not None:
                idle.add_metric(k, gpu.idle_allocated_seconds)
            if "ecc_uncorrected" in gpu.values:
                ecc.add_metric(k, gpu.values["ecc_uncorrected"])
            for reason, active in sorted((gpu.throttled or {}).items()):
                throttled.add_metric([*k, reason], 1.0 if active else 0.0)
            for (uuid, code), count in sorted(snapshot.xid.items()):
                if uuid == gpu.device.uuid:
                    xid.add_metric([*k, code], count)
        yield from (busy, idle, ecc, throttled, info, xid)

        task_seconds = catalog.counter("celery_task_gpu_seconds_total")
        for (queue, task), seconds in sorted(snapshot.task_seconds.items()):
            task_seconds.add_metric([queue, task], seconds)
        yield task_seconds
        task_memory = catalog.gauge("celery_task_gpu_memory_bytes")
        for (queue, task), used in sorted(snapshot.task_memory.items()):
            task_memory.add_metric([queue, task], used)
        yield task_memory
