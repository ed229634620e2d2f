"""GPU metrics from NVML, attributed to Celery work.

Modules: ``nvml`` (the one NVML session), ``device`` (one read of one card), ``busy`` (busy and idle
seconds from NVML's sample buffer), ``xid`` (XID event thread), ``attribution`` + ``celery_hook``
(GPU process -> Celery task), ``sampler`` (background cycle, snapshots); the exporter's
``exporter.collectors.gpu`` builds the families.
Kept free of heavy imports: workers import ``exporter.gpu.celery_hook`` (which re-exports
``lensing_sources.gpu.celery_hook``) through this package.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from lensing_core.options import add_option, positive_float, positive_int, ratio

if TYPE_CHECKING:
    from lensing_sources.gpu.sampler import GpuSampler

log = logging.getLogger(__name__)

GPU_MODES = ("auto", "on", "off")


def _gpu_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in GPU_MODES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(GPU_MODES)}, got {text!r}")
    return mode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the GPU collector (added to `lensing-metrics exporter`)."""
    # no argument group: add_option reports a bad environment value through parser.error
    add_option(
        parser,
        "--gpu",
        env="LENSING_GPU",
        default="auto",
        type=_gpu_mode,
        nargs="?",
        const="on",
        metavar="auto|on|off",
        help="GPU metrics from NVML: auto (default) = on where NVML loads, nothing where there is no NVIDIA "
        "driver; on (or bare --gpu) = always, a missing NVML is nvml_up 0; off = never",
    )
    add_option(
        parser,
        "--gpu-sample-interval",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        env="LENSING_GPU_SAMPLE_INTERVAL",
        help="seconds between GPU reads (default 2); /metrics answers from the last read",
    )
    add_option(
        parser,
        "--gpu-idle-threshold",
        type=ratio,
        default=0.05,
        metavar="RATIO",
        env="LENSING_GPU_IDLE_THRESHOLD",
        help="utilization at or below which an allocated GPU counts as idle in gpu_idle_allocated_seconds_total "
        "(default 0.05)",
    )
    add_option(
        parser,
        "--gpu-task-dir",
        default="/run/lensing-metrics/gpu-tasks",
        metavar="PATH",
        env="LENSING_GPU_TASK_DIR",
        help="directory where workers importing exporter.gpu.celery_hook publish their running task "
        "(default /run/lensing-metrics/gpu-tasks); the same variable configures the workers",
    )
    add_option(
        parser,
        "--gpu-max-task-names",
        type=positive_int,
        default=200,
        metavar="N",
        env="LENSING_GPU_MAX_TASK_NAMES",
        help="most distinct task (and queue) label values on celery_task_gpu_*; later ones are 'other' (default 200)",
    )
    add_option(
        parser,
        "--gpu-pod-resources-socket",
        default="/var/lib/kubelet/pod-resources/kubelet.sock",
        metavar="PATH",
        env="LENSING_GPU_POD_RESOURCES_SOCKET",
        help="the kubelet's pod-resources socket; when it is there (mounted read-only) and grpcio is installed, "
        "per-GPU series get pod, namespace, container labels; '' turns this off",
    )


class GpuSource:
    """The GPU sampler (the exporter adds its collector). It never decides readiness: a node without a GPU
    is healthy."""

    name = "gpu"

    def __init__(self, sampler: GpuSampler) -> None:
        self.sampler = sampler

    def start(self) -> None:
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()

    def readiness(self) -> None:
        return None


def build_source(args: argparse.Namespace, nvml: Any = None) -> GpuSource | None:
    """The GPU sampler source, or None when --gpu is off, or auto and NVML is absent.

    ``nvml`` replaces the ``pynvml`` module (the tests pass a fake NVML)."""
    from lensing_sources.gpu.attribution import TaskAttributor
    from lensing_sources.gpu.nvml import ABSENT_REASONS, load_pynvml
    from lensing_sources.gpu.podresources import DEFAULT_SOCKET, open_client
    from lensing_sources.gpu.sampler import GpuSampler

    mode = getattr(args, "gpu", "auto") or "auto"
    if mode == "off":
        return None
    sampler = GpuSampler(
        nvml if nvml is not None else load_pynvml(),
        interval=getattr(args, "gpu_sample_interval", 2.0),
        idle_threshold=getattr(args, "gpu_idle_threshold", 0.05),
        attributor=TaskAttributor(
            getattr(args, "gpu_task_dir", "/run/lensing-metrics/gpu-tasks"), getattr(args, "gpu_max_task_names", 200)
        ),
    )
    reason = sampler.open(
        log_failure=mode == "on"
    )  # NVML is initialised here, once; the sampler re-opens only after a fault
    if reason in ABSENT_REASONS and mode == "auto":
        log.info("no NVIDIA driver or NVML here (%s): GPU metrics off; --gpu=on exports nvml_up 0 instead", reason)
        return None
    sampler.allocations = open_client(getattr(args, "gpu_pod_resources_socket", DEFAULT_SOCKET))
    return GpuSource(sampler)
