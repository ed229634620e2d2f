"""The GPU metric families, built from the sampler's last snapshot (names: lensing_metrics.catalog.GPU)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.gpu.sampler import GpuSampler, GpuState

_GPU_LABELS = ["gpu", "uuid", "model"]
_POD_LABELS = ["pod", "namespace", "container"]

# snapshot field -> (metric, kind, help)
_VALUES = (
    ("utilization", "gpu_utilization_ratio", "Share of the last sample period a kernel ran on the GPU (0-1)."),
    (
        "memory_utilization",
        "gpu_memory_utilization_ratio",
        "Share of the last sample period device memory was read or written (0-1).",
    ),
    ("memory_used", "gpu_memory_used_bytes", "Device memory in use."),
    ("memory_total", "gpu_memory_total_bytes", "Device memory in all."),
    ("temperature", "gpu_temperature_celsius", "GPU core temperature."),
    ("power", "gpu_power_watts", "Power draw of the board."),
    ("power_limit", "gpu_power_limit_watts", "Power limit enforced on the board."),
    ("sm_clock", "gpu_sm_clock_hertz", "Current SM clock."),
)


class GpuCollector(Collector):
    """Per-GPU series exist only for cards read in the last cycle, and per field only where the card
    reports it. While NVML is down only ``nvml_up 0`` and the error counts are there."""

    def __init__(self, sampler: GpuSampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        snapshot = self.sampler.snapshot
        up = GaugeMetricFamily("nvml_up", "1 when NVML is initialised and was read in the last cycle, else 0.")
        up.add_metric([], 1.0 if snapshot.up else 0.0)
        yield up
        errors = CounterMetricFamily("nvml_errors", "NVML errors, by NVML error name.", labels=["reason"])
        for reason, count in sorted(snapshot.errors.items()):
            errors.add_metric([reason], count)
        yield errors

        pods = any(g.allocation is not None for g in snapshot.gpus)
        labels = _GPU_LABELS + (_POD_LABELS if pods else [])

        def key(gpu: GpuState) -> list[str]:
            base = [str(gpu.device.index), gpu.device.uuid, gpu.device.model]
            return base + list(gpu.allocation or ("", "", "")) if pods else base

        for field, name, help_text in _VALUES:
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for gpu in snapshot.gpus:
                if field in gpu.values:
                    family.add_metric(key(gpu), gpu.values[field])
            yield family

        busy = CounterMetricFamily(
            "gpu_busy_seconds",
            "Seconds a kernel ran, from NVML's buffered samples: rate() is true utilization.",
            labels=labels,
        )
        idle = CounterMetricFamily(
            "gpu_idle_allocated_seconds",
            "Seconds the GPU was allocated (to a pod, or held by a process) at or below the idle threshold.",
            labels=labels,
        )
        ecc = CounterMetricFamily(
            "gpu_ecc_uncorrected_errors",
            "Uncorrected ECC errors since the driver loaded (cards with ECC on).",
            labels=labels,
        )
        throttled = GaugeMetricFamily(
            "gpu_throttled", "1 while the clocks are held down for this reason.", labels=[*labels, "reason"]
        )
        info = GaugeMetricFamily("gpu_info", "The GPU and its driver; always 1.", labels=[*labels, "driver_version"])
        xid = CounterMetricFamily("gpu_xid_errors", "XID errors the driver reported, by XID.", labels=[*labels, "xid"])
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

        task_seconds = CounterMetricFamily(
            "celery_task_gpu_seconds", "GPU busy seconds of the processes running each task.", labels=["queue", "task"]
        )
        for (queue, task), seconds in sorted(snapshot.task_seconds.items()):
            task_seconds.add_metric([queue, task], seconds)
        yield task_seconds
        task_memory = GaugeMetricFamily(
            "celery_task_gpu_memory_bytes",
            "GPU memory held now by the processes running each task.",
            labels=["queue", "task"],
        )
        for (queue, task), used in sorted(snapshot.task_memory.items()):
            task_memory.add_metric([queue, task], used)
        yield task_memory
