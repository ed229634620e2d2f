"""A pure-Python stand-in for the ``pynvml`` module of nvidia-ml-py, for machines without a GPU.

It has the functions the GPU collector calls, under the same names and signatures, returning the same
types (ctypes structures with the same field names, lists of objects with ``.pid``/``.usedGpuMemory``),
and raising the same exception classes: ``NVMLError`` and one subclass per NVML error code, with the
same names (``NVMLError_GpuIsLost`` ...) and the same codes. A :class:`FakeNvml` instance is passed
where the collector would otherwise import ``pynvml``, so the collector runs its real code path.

Error injection: ``library_missing``/``driver_missing`` make ``nvmlInit`` fail; ``FakeGpu.lost`` makes
every call on that GPU raise ``GPU_IS_LOST``; ``FakeGpu.unsupported``/``no_permission``/``function_not_found``
name functions that raise ``NOT_SUPPORTED``/``NO_PERMISSION``/``FUNCTION_NOT_FOUND`` (a driver older than
the function) for that GPU; ``FakeGpu.library_mismatch`` names functions that raise
``NVMLLibraryMismatchError`` (what pynvml's unversioned wrappers raise when the driver lacks the version
they call); ``inject_xid`` queues an XID event; ``version_mismatch`` makes the next device call raise
``LIB_RM_VERSION_MISMATCH`` (a driver upgraded under a running process). ``calls`` counts the calls per
function, ``callers`` per thread name.
"""

from __future__ import annotations

import ctypes
import itertools
import queue
import string
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# ---- constants, same names and values as pynvml ----
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999
_ERROR_CODES = {name: value for name, value in globals().items() if name.startswith("NVML_ERROR_")}

NVML_FEATURE_DISABLED = 0
NVML_FEATURE_ENABLED = 1
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_GPU_UTILIZATION_SAMPLES = 1
NVML_MEMORY_UTILIZATION_SAMPLES = 2
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG = 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
NVML_VALUE_TYPE_SIGNED_INT = 5
NVML_VALUE_TYPE_UNSIGNED_SHORT = 6

nvmlEventTypeSingleBitEccError = 0x1
nvmlEventTypeDoubleBitEccError = 0x2
nvmlEventTypePState = 0x4
nvmlEventTypeXidCriticalError = 0x8
nvmlEventTypeClock = 0x10

nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonApplicationsClocksSetting = 0x2
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksEventReasonHwSlowdown = 0x8
nvmlClocksEventReasonSyncBoost = 0x10
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksEventReasonHwThermalSlowdown = 0x40
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80
nvmlClocksEventReasonDisplayClockSetting = 0x100
nvmlClocksThrottleReasonGpuIdle = 0x1
nvmlClocksThrottleReasonSwPowerCap = 0x4
nvmlClocksThrottleReasonHwSlowdown = 0x8
nvmlClocksThrottleReasonSwThermalSlowdown = 0x20
nvmlClocksThrottleReasonHwThermalSlowdown = 0x40


# ---- exceptions, same hierarchy, names and codes as pynvml ----
class NVMLLibraryMismatchError(Exception):
    pass


class NVMLError(Exception):
    _valClassMapping: dict[int, type[NVMLError]] = {}
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return f"NVML Error with code {self.value}"


def _make_error_classes() -> dict[str, type[NVMLError]]:
    classes = {}
    for err_name, code in _ERROR_CODES.items():
        class_name = "NVMLError_" + string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace("_", "")

        def gen_new(val: int) -> Any:
            def new(typ: type[NVMLError], *args: Any) -> NVMLError:
                return NVMLError.__new__(typ, val)

            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(code)})
        NVMLError._valClassMapping[code] = cls
        classes[class_name] = cls
    return classes


_ERROR_CLASSES = _make_error_classes()
globals().update(_ERROR_CLASSES)


# ---- structures, same field names as pynvml ----
class c_nvmlMemory_t(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class c_nvmlUtilization_t(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class c_nvmlValue_t(ctypes.Union):
    _fields_ = [
        ("dVal", ctypes.c_double),
        ("uiVal", ctypes.c_uint),
        ("ulVal", ctypes.c_ulong),
        ("ullVal", ctypes.c_ulonglong),
        ("sllVal", ctypes.c_longlong),
        ("siVal", ctypes.c_int),
        ("usVal", ctypes.c_ushort),
    ]


class c_nvmlSample_t(ctypes.Structure):
    _fields_ = [("timeStamp", ctypes.c_ulonglong), ("sampleValue", c_nvmlValue_t)]


class nvmlFriendlyObject:
    """What pynvml returns per process: pid, usedGpuMemory (None when unknown), gpuInstanceId, computeInstanceId."""

    def __init__(self, dictionary: dict[str, Any]) -> None:
        for key, value in dictionary.items():
            setattr(self, key, value)


_Processes = list[nvmlFriendlyObject]  # an alias: in FakeNvml's body the name is its class attribute


@dataclass
class FakeHandle:
    """Opaque device handle (pynvml: a c_nvmlDevice_t pointer)."""

    gpu: FakeGpu


@dataclass
class FakeEventData:
    """pynvml's c_nvmlEventData_t: device, eventType, eventData (the XID), gpuInstanceId, computeInstanceId."""

    device: FakeHandle
    eventType: int
    eventData: int
    gpuInstanceId: int = 0
    computeInstanceId: int = 0


class FakeEventSet:
    def __init__(self) -> None:
        self.handles: list[FakeHandle] = []
        self.events: queue.Queue[FakeEventData] = queue.Queue()


@dataclass
class FakeGpu:
    name: str
    uuid: str
    memory_total: int
    power_limit_mw: int
    ecc_enabled: bool
    has_fan: bool
    util_gpu: int = 0
    util_memory: int = 0
    memory_used: int = 0
    temperature: int = 35
    power_mw: int = 20_000
    sm_clock_mhz: int = 585
    throttle_reasons: int = 0x1
    ecc_uncorrected: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (host pid, used bytes)
    samples: list[tuple[int, int]] = field(default_factory=list)  # (timestamp µs, utilization %)
    unsupported: set[str] = field(default_factory=set)
    no_permission: set[str] = field(default_factory=set)
    function_not_found: set[str] = field(default_factory=set)
    library_mismatch: set[str] = field(default_factory=set)
    lost: bool = False

    def run(self, start_us: int, seconds: float, percent: int, period_us: int = 166_667) -> int:
        """Append utilization samples as NVML's driver would (one per ``period_us``); returns the end time."""
        ts = start_us
        end = start_us + int(seconds * 1_000_000)
        while ts + period_us <= end:
            ts += period_us
            self.samples.append((ts, percent))
        del self.samples[:-120]  # NVML keeps a ring buffer of recent samples
        return ts


def tesla_t4(index: int = 0) -> FakeGpu:
    """NVIDIA T4 (g4dn): passively cooled (no fan), 70 W limit, ECC on, 15 GiB usable."""
    return FakeGpu(
        name="Tesla T4",
        uuid=f"GPU-7a3c{index:04x}-1f2e-4d5c-9b8a-0123456789ab",
        memory_total=15_360 * 1024 * 1024,
        power_limit_mw=70_000,
        ecc_enabled=True,
        has_fan=False,
    )


def h100(index: int = 0) -> FakeGpu:
    """NVIDIA H100 80GB HBM3 (SXM): 700 W limit, ECC on, no fan reading."""
    return FakeGpu(
        name="NVIDIA H100 80GB HBM3",
        uuid=f"GPU-e1d0{index:04x}-77aa-4bbb-8ccc-fedcba987654",
        memory_total=81_559 * 1024 * 1024,
        power_limit_mw=700_000,
        ecc_enabled=True,
        has_fan=False,
        sm_clock_mhz=1980,
    )


def _process_objects(gpu: FakeGpu) -> _Processes:
    return [
        nvmlFriendlyObject({"pid": pid, "usedGpuMemory": used, "gpuInstanceId": 0xFFFFFFFF, "computeInstanceId": 0})
        for pid, used in gpu.processes
    ]


class FakeNvml:
    """The ``pynvml`` module, for tests: attributes and functions under pynvml's names."""

    NVMLError = NVMLError
    NVMLLibraryMismatchError = NVMLLibraryMismatchError
    nvmlFriendlyObject = nvmlFriendlyObject
    c_nvmlSample_t = c_nvmlSample_t

    def __init__(self, gpus: list[FakeGpu] | None = None, driver_version: str = "550.54.15") -> None:
        for name, value in globals().items():
            if name.startswith(("NVML_", "nvmlEventType", "nvmlClocks", "NVMLError_")):
                setattr(self, name, value)
        self.gpus = list(gpus if gpus is not None else [tesla_t4()])
        self.driver_version = driver_version
        self.library_missing = False
        self.driver_missing = False
        self.version_mismatch = False
        self.initialised = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: Counter[str] = Counter()
        self.callers: Counter[str] = Counter()
        self.count_calls = True
        self._event_sets: list[FakeEventSet] = []
        self._lock = threading.Lock()
        self._pid_counter = itertools.count(1)

    # ---- test controls ----
    def inject_xid(self, index: int, xid: int) -> None:
        handle = FakeHandle(self.gpus[index])
        for event_set in self._event_sets:
            if any(h.gpu is self.gpus[index] for h in event_set.handles):
                event_set.events.put(FakeEventData(handle, nvmlEventTypeXidCriticalError, xid))

    # ---- plumbing ----
    def _check(self, name: str, handle: FakeHandle | None = None) -> FakeGpu:
        if self.count_calls:
            self.calls[name] += 1
            self.callers[threading.current_thread().name] += 1
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if self.version_mismatch:
            raise NVMLError(NVML_ERROR_LIB_RM_VERSION_MISMATCH)
        if handle is None:
            return None  # type: ignore[return-value]
        gpu = handle.gpu
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if name in gpu.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if name in gpu.no_permission:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        if name in gpu.function_not_found:
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        if name in gpu.library_mismatch:
            raise NVMLLibraryMismatchError(f"{name}: the NVML library lacks this version; use {name}_v2")
        return gpu

    # ---- library ----
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.library_missing:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.driver_missing:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
        self.initialised += 1
        self.version_mismatch = False

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        handle = FakeHandle(self.gpus[index])
        self._check("nvmlDeviceGetHandleByIndex", handle)
        return handle

    # ---- device queries ----
    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return self._check("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        return self._check("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetIndex(self, handle: FakeHandle) -> int:
        return self.gpus.index(self._check("nvmlDeviceGetIndex", handle))

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> c_nvmlUtilization_t:
        gpu = self._check("nvmlDeviceGetUtilizationRates", handle)
        return c_nvmlUtilization_t(gpu.util_gpu, gpu.util_memory)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle, version: int | None = None) -> c_nvmlMemory_t:
        gpu = self._check("nvmlDeviceGetMemoryInfo", handle)
        return c_nvmlMemory_t(gpu.memory_total, gpu.memory_total - gpu.memory_used, gpu.memory_used)

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        return self._check("nvmlDeviceGetTemperature", handle).temperature

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        return self._check("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        return self._check("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, type: int) -> int:
        return self._check("nvmlDeviceGetClockInfo", handle).sm_clock_mhz

    def nvmlDeviceGetFanSpeed(self, handle: FakeHandle) -> int:
        gpu = self._check("nvmlDeviceGetFanSpeed", handle)
        if not gpu.has_fan:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return 30

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeHandle) -> int:
        return self._check("nvmlDeviceGetCurrentClocksEventReasons", handle).throttle_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeHandle) -> int:
        return self._check("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_reasons

    def nvmlDeviceGetEccMode(self, handle: FakeHandle) -> list[int]:
        gpu = self._check("nvmlDeviceGetEccMode", handle)
        mode = NVML_FEATURE_ENABLED if gpu.ecc_enabled else NVML_FEATURE_DISABLED
        return [mode, mode]

    def nvmlDeviceGetTotalEccErrors(self, handle: FakeHandle, errorType: int, counterType: int) -> int:
        gpu = self._check("nvmlDeviceGetTotalEccErrors", handle)
        if not gpu.ecc_enabled:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.ecc_uncorrected

    def nvmlDeviceGetSamples(self, device: FakeHandle, sampling_type: int, timeStamp: int) -> tuple[int, list[Any]]:
        gpu = self._check("nvmlDeviceGetSamples", device)
        newer = [(ts, value) for ts, value in gpu.samples if ts > timeStamp]
        if not newer:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        out = []
        for ts, value in newer:
            sample = c_nvmlSample_t()
            sample.timeStamp = ts
            sample.sampleValue.uiVal = value
            out.append(sample)
        return NVML_VALUE_TYPE_UNSIGNED_INT, out

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> _Processes:
        return _process_objects(self._check("nvmlDeviceGetComputeRunningProcesses", handle))

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: FakeHandle) -> _Processes:
        return _process_objects(self._check("nvmlDeviceGetComputeRunningProcesses_v2", handle))

    # ---- events ----
    def nvmlEventSetCreate(self) -> FakeEventSet:
        self._check("nvmlEventSetCreate")
        event_set = FakeEventSet()
        with self._lock:
            self._event_sets.append(event_set)
        return event_set

    def nvmlDeviceGetSupportedEventTypes(self, handle: FakeHandle) -> int:
        self._check("nvmlDeviceGetSupportedEventTypes", handle)
        return nvmlEventTypeXidCriticalError | nvmlEventTypeDoubleBitEccError | nvmlEventTypeSingleBitEccError

    def nvmlDeviceRegisterEvents(self, handle: FakeHandle, eventTypes: int, eventSet: FakeEventSet) -> None:
        self._check("nvmlDeviceRegisterEvents", handle)
        eventSet.handles.append(handle)

    def nvmlEventSetWait(self, eventSet: FakeEventSet, timeoutms: int) -> FakeEventData:
        self._check("nvmlEventSetWait")
        try:
            return eventSet.events.get(timeout=timeoutms / 1000)
        except queue.Empty:
            raise NVMLError(NVML_ERROR_TIMEOUT) from None

    def nvmlEventSetFree(self, eventSet: FakeEventSet) -> None:
        self._check("nvmlEventSetFree")
        with self._lock:
            if eventSet in self._event_sets:
                self._event_sets.remove(eventSet)
