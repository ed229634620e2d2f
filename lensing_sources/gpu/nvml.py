"""The process's one NVML session: initialised once, shut down at exit, opened again after a fault.

The ``nvml`` object is the ``pynvml`` module of nvidia-ml-py, or anything with its names (the tests
pass a fake): every call goes through it, so tests run the same code path as production.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Errors after which the handles are worthless: the GPU fell off the bus, or the driver under us changed.
REOPEN_REASONS = frozenset({"gpu_is_lost", "lib_rm_version_mismatch", "uninitialized", "reset_required", "unknown"})
#: Errors that say "this field, on this card" and nothing about the others.
FIELD_REASONS = frozenset({"not_supported", "no_permission", "function_not_found", "library_mismatch"})
#: Errors of nvmlInit that mean "no NVIDIA GPU here" rather than "something broke".
ABSENT_REASONS = frozenset({"module_missing", "library_not_found", "driver_not_loaded"})


def load_pynvml() -> Any:
    """The real module, or None when nvidia-ml-py is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def error_reason(nvml: Any, exc: BaseException) -> str:
    """A bounded label for an NVML error: the snake_case of pynvml's class name (``NVMLError_GpuIsLost``
    -> ``gpu_is_lost``); one value per NVML error code."""
    if nvml is not None and isinstance(exc, nvml.NVMLLibraryMismatchError):
        return "library_mismatch"
    name = type(exc).__name__
    if name.startswith("NVMLError_"):
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name.removeprefix("NVMLError_")).lower()
    value = getattr(exc, "value", None)
    return f"code_{value}" if isinstance(value, int) else "internal"


@dataclass(frozen=True, slots=True)
class Device:
    index: int
    uuid: str
    model: str
    handle: Any


class NvmlSession:
    """Owns nvmlInit/nvmlShutdown. ``open()`` returns the reason it failed, or None."""

    def __init__(self, nvml: Any | None) -> None:
        self.nvml = nvml
        self.is_open = False
        self.devices: list[Device] = []
        self.driver_version = ""
        self.device_errors: list[str] = []  # reasons of the cards the last open() skipped

    def open(self) -> str | None:
        if self.nvml is None:
            return "module_missing"
        try:
            self.nvml.nvmlInit()
        except self.nvml.NVMLError as exc:
            return error_reason(self.nvml, exc)
        self.is_open = True
        self.device_errors = []
        try:
            self.driver_version = str(self.nvml.nvmlSystemGetDriverVersion())
            count = self.nvml.nvmlDeviceGetCount()
        except (self.nvml.NVMLError, self.nvml.NVMLLibraryMismatchError) as exc:
            self.close()
            return error_reason(self.nvml, exc)
        devices = []
        for index in range(count):
            try:
                handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = str(self.nvml.nvmlDeviceGetUUID(handle))
                model = str(self.nvml.nvmlDeviceGetName(handle))
            except (self.nvml.NVMLError, self.nvml.NVMLLibraryMismatchError) as exc:
                # one broken card must not hide the others; it is counted and tried again at the next open
                self.device_errors.append(error_reason(self.nvml, exc))
                log.warning("GPU %d cannot be opened: %s", index, exc)
                continue
            devices.append(Device(index, uuid, model, handle))
        self.devices = devices
        return None

    def close(self) -> None:
        if not self.is_open or self.nvml is None:
            return
        self.is_open = False
        self.devices = []
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError as exc:
            log.debug("nvmlShutdown: %s", exc)
