"""Reads every GPU in the background and publishes one immutable snapshot per cycle; /metrics reads that.

One cycle: open NVML if it is not open (with backoff while it cannot be), read each card, integrate
its new utilization samples, attribute its processes to Celery tasks, publish. A card that fails with
an error other than a per-field one (``GPU_IS_LOST`` ...) is left out of that snapshot, the error is
counted, and NVML is shut down and opened again on the next cycle.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lensing_core.background import BackgroundThread
from lensing_sources.gpu.attribution import TaskAttributor
from lensing_sources.gpu.busy import UtilizationIntegrator
from lensing_sources.gpu.device import DeviceReader
from lensing_sources.gpu.nvml import Device, NvmlSession, error_reason
from lensing_sources.gpu.xid import XidWatcher

log = logging.getLogger(__name__)

TaskKey = tuple[str, str]  # (queue, task)


@dataclass(frozen=True, slots=True)
class GpuState:
    device: Device
    values: dict[str, float]
    throttled: dict[str, bool] | None
    busy_seconds: float | None  # None: the card has no utilization samples
    idle_allocated_seconds: float | None
    allocation: tuple[str, str, str] | None = None  # (pod, namespace, container) from the kubelet


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    up: bool
    driver_version: str = ""
    gpus: tuple[GpuState, ...] = ()
    errors: dict[str, int] = field(default_factory=dict)
    xid: dict[tuple[str, str], int] = field(default_factory=dict)
    task_seconds: dict[TaskKey, float] = field(default_factory=dict)
    task_memory: dict[TaskKey, int] = field(default_factory=dict)
    taken_at: float = 0.0
    duration: float = 0.0


class GpuSampler:
    def __init__(
        self,
        nvml: Any,
        *,
        interval: float = 2.0,
        idle_threshold: float = 0.05,
        attributor: TaskAttributor | None = None,
        allocations: Any = None,
        max_backoff: float = 60.0,
        reopen_missing_after: float = 60.0,
    ) -> None:
        self.nvml = nvml
        self.interval = interval
        self.session = NvmlSession(nvml)
        self.reader = DeviceReader(nvml)
        self.integrator = UtilizationIntegrator(idle_threshold)
        self.xid = XidWatcher(nvml)
        self.attributor = attributor
        self.allocations = allocations  # an object with .by_uuid() -> {uuid: (pod, namespace, container)}
        self.max_backoff = max(max_backoff, interval)
        self.reopen_missing_after = reopen_missing_after
        self.errors: Counter[str] = Counter()
        self.task_seconds: dict[TaskKey, float] = {}
        self._snapshot = GpuSnapshot(up=False)
        self._failures = 0  # consecutive failed opens
        self._read_failures = 0  # consecutive cycles that ended in a reopen
        self._next_open = 0.0
        self._opened_at = 0.0
        self._worker = BackgroundThread(self._run, name="gpu-sampler", on_crash=self._crashed)
        self._stop = self._worker.stopping

    @property
    def snapshot(self) -> GpuSnapshot:
        return self._snapshot  # replaced whole each cycle

    def open(self, log_failure: bool = True) -> str | None:
        """Initialise NVML now; the reason it failed, or None. Used by --gpu=auto to see whether NVML loads."""
        reason = self.session.open()
        if reason is not None:
            self._failures += 1
            self.errors[reason] += 1
            if self._failures == 1 and log_failure:
                log.warning("NVML cannot be initialised (%s); GPU series are absent, nvml_up is 0", reason)
            self._back_off(self._failures)
            return reason
        for device_reason in self.session.device_errors:
            self.errors[device_reason] += 1
        if self._failures or not self._opened_at:
            log.info(
                "NVML initialised: driver %s, %d GPU(s): %s",
                self.session.driver_version,
                len(self.session.devices),
                ", ".join(f"{d.index}={d.model}" for d in self.session.devices) or "none",
            )
        self._failures = 0
        self._opened_at = time.monotonic()
        self.reader.forget()
        self.xid.start(self.session.devices)
        return None

    def _back_off(self, failures: int) -> None:
        """No open before interval x 2^(failures-1), at most max_backoff; the first retry is the next cycle
        (10 % early, so the cycle that starts one interval later is not skipped)."""
        self._next_open = time.monotonic() + 0.9 * min(self.interval * 2 ** (failures - 1), self.max_backoff)

    def close(self) -> None:
        self.xid.stop()
        self.session.close()

    def sample_once(self) -> GpuSnapshot:
        started = time.monotonic()
        if (
            self.session.is_open
            and self.session.device_errors
            and started - self._opened_at > self.reopen_missing_after
        ):
            self.close()  # a card was unreadable at the last open: look for it again
        if not self.session.is_open and (started < self._next_open or self.open() is not None):
            self._publish(GpuSnapshot(up=False, errors=self._errors()), started)
            return self._snapshot

        allocations = self._allocations()
        gpus: list[GpuState] = []
        task_memory: dict[TaskKey, int] = {}
        reopen = False
        for device in self.session.devices:
            try:
                reading = self.reader.read(device, self.integrator.last_timestamp(device.uuid))
            except (self.nvml.NVMLError, self.nvml.NVMLLibraryMismatchError) as exc:
                reason = error_reason(self.nvml, exc)
                self.errors[reason] += 1
                if not self._read_failures:
                    log.warning(
                        "GPU %d (%s) read failed (%s): its series are dropped; reopening NVML",
                        device.index,
                        device.uuid,
                        reason,
                    )
                reopen = True
                continue
            allocation = allocations.get(device.uuid)
            processes = reading.processes or []
            busy = idle = None
            if reading.samples is not None:
                allocated = allocation is not None or bool(processes)
                added = self.integrator.add(device.uuid, reading.samples, allocated)
                busy = self.integrator.busy_seconds[device.uuid]
                idle = self.integrator.idle_allocated_seconds[device.uuid]
                self._attribute(processes, added.busy_seconds, task_memory)
            else:
                self._attribute(processes, 0.0, task_memory)
            gpus.append(GpuState(device, reading.values, reading.throttled, busy, idle, allocation))
        if reopen:
            self._read_failures += 1
            self.close()
            self._back_off(self._read_failures)
        else:
            self._read_failures = 0
        xid_counts, xid_errors = self.xid.snapshot()
        self._publish(
            GpuSnapshot(
                up=True,
                driver_version=self.session.driver_version,
                gpus=tuple(gpus),
                errors=self._errors(xid_errors),
                xid={key: n for key, n in xid_counts.items() if any(g.device.uuid == key[0] for g in gpus)},
                task_seconds=dict(self.task_seconds),
                task_memory=task_memory,
            ),
            started,
        )
        return self._snapshot

    def _attribute(self, processes: list[tuple[int, int | None]], busy: float, memory: dict[TaskKey, int]) -> None:
        """Share the card's busy seconds of this cycle equally among its processes (exact for the usual
        one process per GPU) and credit the shares of Celery pool processes to the task each runs."""
        if self.attributor is None or not processes:
            return
        share = busy / len(processes)
        for pid, used in processes:
            task = self.attributor.lookup(pid)
            if task is None:
                continue
            self.task_seconds[task] = self.task_seconds.get(task, 0.0) + share
            if used is not None:
                memory[task] = memory.get(task, 0) + used

    def _allocations(self) -> dict[str, tuple[str, str, str]]:
        if self.allocations is None:
            return {}
        try:
            return dict(self.allocations.by_uuid())
        except Exception as exc:  # the kubelet is another source: its fault only drops the pod labels
            self.errors["pod_resources"] += 1
            log.debug("pod resources unavailable: %s", exc)
            return {}

    def _errors(self, extra: dict[str, int] | None = None) -> dict[str, int]:
        merged = Counter(self.errors)
        merged.update(extra or {})
        return dict(merged)

    def _publish(self, snapshot: GpuSnapshot, started: float) -> None:
        self._snapshot = dataclasses.replace(snapshot, taken_at=time.time(), duration=time.monotonic() - started)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample_once()
            self._stop.wait(max(self.interval - (time.monotonic() - started), 0.0))

    def _crashed(self, exc: BaseException | None) -> None:
        """The sampling loop died (it is restarted): until the next sample, the GPUs read as down."""
        self.errors["internal"] += 1
        self._publish(GpuSnapshot(up=False, errors=self._errors()), time.monotonic())

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
        self.close()
        if self.allocations is not None and hasattr(self.allocations, "close"):
            self.allocations.close()
