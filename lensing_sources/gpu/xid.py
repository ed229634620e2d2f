"""XID errors (the driver's GPU fault reports) from NVML's event API, on a thread of their own.

``nvmlEventSetWait`` blocks until an event or its timeout; the sampler starts one watcher after each
``nvmlInit`` and stops it before ``nvmlShutdown``. Counts are kept by GPU UUID; the sampler copies them into
each snapshot.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from lensing_core.background import BackgroundThread
from lensing_sources.gpu.nvml import Device, error_reason

log = logging.getLogger(__name__)

WAIT_MS = 200  # also the longest a stop (before an NVML re-init) waits for the thread
MAX_XID_VALUES = 64  # XIDs are small integers; anything beyond this many distinct ones is "other"


class XidWatcher:
    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        # kept across stop/start, so the counters survive a re-initialisation of NVML
        self.counts: Counter[tuple[str, str]] = Counter()  # (uuid, xid) -> events
        self.errors: Counter[str] = Counter()  # failed waits by reason
        self.lock = threading.Lock()
        self.watched: set[str] = set()  # uuids registered for XID events
        self._event_set: Any = None
        self._worker = BackgroundThread(self._run, name="gpu-xid")
        self._stop = self._worker.stopping

    def start(self, devices: list[Device]) -> None:
        nvml = self.nvml
        try:
            self._event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.info("NVML events unavailable (%s): no XID counts", exc)
            return
        for device in devices:
            try:
                if not nvml.nvmlDeviceGetSupportedEventTypes(device.handle) & nvml.nvmlEventTypeXidCriticalError:
                    raise nvml.NVMLError(nvml.NVML_ERROR_NOT_SUPPORTED)
                nvml.nvmlDeviceRegisterEvents(device.handle, nvml.nvmlEventTypeXidCriticalError, self._event_set)
            except nvml.NVMLError as exc:
                log.info("GPU %d (%s) does not report XID events: %s", device.index, device.uuid, exc)
                continue
            self.watched.add(device.uuid)
        if not self.watched:
            self._free()
            return
        self._worker.start()

    def _run(self) -> None:
        nvml = self.nvml
        failing = False
        while not self._stop.is_set():
            try:
                event = nvml.nvmlEventSetWait(self._event_set, WAIT_MS)
            except nvml.NVMLError as exc:
                reason = error_reason(nvml, exc)
                if reason == "timeout":
                    failing = False
                    continue
                with self.lock:
                    self.errors[reason] += 1
                if not failing:
                    log.warning("waiting for XID events failed (%s); retrying every second", exc)
                failing = True
                self._stop.wait(1.0)
                continue
            failing = False
            if not event.eventType & nvml.nvmlEventTypeXidCriticalError:
                continue
            try:
                uuid = str(nvml.nvmlDeviceGetUUID(event.device))
            except nvml.NVMLError:
                continue
            with self.lock:
                xid = str(int(event.eventData))
                known = {x for (u, x) in self.counts if u == uuid}
                if xid not in known and len(known) >= MAX_XID_VALUES:
                    xid = "other"
                self.counts[(uuid, xid)] += 1
            log.warning("GPU %s reported XID %s", uuid, xid)

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """(XID counts, wait errors) as of now."""
        with self.lock:
            return dict(self.counts), dict(self.errors)

    def stop(self) -> None:
        self._worker.stop(timeout=WAIT_MS / 1000 + 5)
        self._free()
        self.watched = set()

    def _free(self) -> None:
        if self._event_set is not None:
            try:
                self.nvml.nvmlEventSetFree(self._event_set)
            except self.nvml.NVMLError as exc:
                log.debug("nvmlEventSetFree: %s", exc)
            self._event_set = None
