"""One read of one GPU: every field it supports, its new utilization samples and its compute processes.

A field the card does not support (``NOT_SUPPORTED``), may not be read by this user (``NO_PERMISSION``)
or that the driver lacks (``FUNCTION_NOT_FOUND``) is dropped for that card: it is not asked for again
until NVML is opened anew, its series is absent (never 0), and the card's missing fields are logged
once. Any other NVML error is raised to the sampler, which drops the card from this cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lensing_sources.gpu.nvml import FIELD_REASONS, Device, error_reason

log = logging.getLogger(__name__)

#: NVML's clock event ("throttle") reason bits, by the label value they get.
THROTTLE_REASONS: dict[str, int] = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}

# nvmlValueType_t -> the c_nvmlValue_t member holding the value
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


@dataclass(slots=True)
class Reading:
    device: Device
    values: dict[str, float]  # field -> value in base units (ratio, bytes, celsius, watts, hertz, count)
    throttled: dict[str, bool] | None
    samples: list[tuple[int, float]] | None  # new (timestamp µs, busy ratio); None: the card has no samples
    processes: list[tuple[int, int | None]] | None  # (host pid, used bytes or None); None: cannot be listed


class _Unsupported(Exception):
    pass


class DeviceReader:
    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.missing: dict[str, dict[str, str]] = {}  # uuid -> field -> reason
        self._logged: dict[str, int] = {}
        self._ecc_enabled: dict[str, bool] = {}

    def forget(self) -> None:
        """After NVML is opened again every field is tried again (a new driver may support more)."""
        self.missing.clear()
        self._logged.clear()
        self._ecc_enabled.clear()

    def read(self, device: Device, last_sample_us: int) -> Reading:
        nvml, handle = self.nvml, device.handle
        values: dict[str, float] = {}
        utilization = self._field(device, "utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        if utilization is not None:
            values["utilization"] = utilization.gpu / 100.0
            values["memory_utilization"] = utilization.memory / 100.0
        memory = self._field(device, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        if memory is not None:
            values["memory_used"] = float(memory.used)
            values["memory_total"] = float(memory.total)
        self._put(
            values, device, "temperature", lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
        )
        self._put(values, device, "power", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)
        self._put(values, device, "power_limit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0)
        self._put(values, device, "sm_clock", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) * 1e6)
        self._put(values, device, "ecc_uncorrected", lambda: self._ecc(device))
        reasons = self._field(device, "throttle_reasons", lambda: self._throttle_reasons(handle))
        throttled = None if reasons is None else {name: bool(reasons & bit) for name, bit in THROTTLE_REASONS.items()}
        samples = self._field(device, "utilization_samples", lambda: self._samples(handle, last_sample_us))
        processes = self._field(device, "processes", lambda: self._processes(handle))
        self._log_missing(device)
        return Reading(device, values, throttled, samples, processes)

    def _put(self, values: dict[str, float], device: Device, name: str, read: Callable[[], Any]) -> None:
        value = self._field(device, name, read)
        if value is not None:
            values[name] = float(value)

    def _field(self, device: Device, name: str, read: Callable[[], Any]) -> Any:
        missing = self.missing.setdefault(device.uuid, {})
        if name in missing:
            return None
        try:
            return read()
        except _Unsupported as exc:
            missing[name] = str(exc)
        except (self.nvml.NVMLError, self.nvml.NVMLLibraryMismatchError) as exc:
            reason = error_reason(self.nvml, exc)
            if reason not in FIELD_REASONS:
                raise
            missing[name] = reason
        return None

    def _log_missing(self, device: Device) -> None:
        missing = self.missing.get(device.uuid, {})
        if len(missing) != self._logged.get(device.uuid, 0):
            self._logged[device.uuid] = len(missing)
            log.info(
                "GPU %d (%s, %s) does not report: %s; those series are absent for it",
                device.index,
                device.model,
                device.uuid,
                ", ".join(f"{name} ({reason})" for name, reason in sorted(missing.items())),
            )

    def _ecc(self, device: Device) -> int:
        enabled = self._ecc_enabled.get(device.uuid)
        if enabled is None:
            current, _pending = self.nvml.nvmlDeviceGetEccMode(device.handle)
            enabled = self._ecc_enabled[device.uuid] = current == self.nvml.NVML_FEATURE_ENABLED
        if not enabled:
            raise _Unsupported("ecc_disabled")
        return int(
            self.nvml.nvmlDeviceGetTotalEccErrors(
                device.handle, self.nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, self.nvml.NVML_VOLATILE_ECC
            )
        )

    def _throttle_reasons(self, handle: Any) -> int:
        read = getattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if read is not None:
            try:
                return int(read(handle))
            except self.nvml.NVMLError as exc:
                if error_reason(self.nvml, exc) != "function_not_found":
                    raise
        # drivers before 535 know only the older name
        return int(self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))

    def _samples(self, handle: Any, last_sample_us: int) -> list[tuple[int, float]]:
        try:
            value_type, samples = self.nvml.nvmlDeviceGetSamples(
                handle, self.nvml.NVML_GPU_UTILIZATION_SAMPLES, last_sample_us
            )
        except self.nvml.NVMLError as exc:
            if error_reason(self.nvml, exc) == "not_found":  # no sample newer than last_sample_us
                return []
            raise
        member = _VALUE_MEMBERS[value_type] if 0 <= value_type < len(_VALUE_MEMBERS) else "uiVal"
        return [(int(s.timeStamp), float(getattr(s.sampleValue, member)) / 100.0) for s in samples]

    def _processes(self, handle: Any) -> list[tuple[int, int | None]]:
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except self.nvml.NVMLLibraryMismatchError:
            # a driver older than the bindings: the v2 struct has the same fields
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses_v2(handle)
        return [(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)) for p in procs]
