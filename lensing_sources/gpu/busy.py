"""Busy and idle-while-allocated seconds, integrated from NVML's buffered utilization samples.

NVML keeps a ring buffer of utilization samples, each the share of its sample period (1/6 s to 1 s,
by product) during which a kernel ran. Reading every sample newer than the last one seen and adding
``share x period`` gives a counter whose ``rate()`` is the true average over any window: a burst
between two scrapes is counted, where a point reading of ``nvmlDeviceGetUtilizationRates`` misses it.

A gap longer than NVML's longest sample period (the buffer overflowed, the exporter stalled) is not
made up: each sample covers at most :data:`MAX_SAMPLE_PERIOD_US`, the rest of the gap is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_SAMPLE_PERIOD_US = 1_000_000


@dataclass(slots=True)
class Integrated:
    busy_seconds: float
    idle_allocated_seconds: float


class UtilizationIntegrator:
    """Per GPU (by UUID, so counters survive a re-initialisation that renumbers the cards)."""

    def __init__(self, idle_threshold: float) -> None:
        self.idle_threshold = idle_threshold
        self.last_us: dict[str, int] = {}
        self.busy_seconds: dict[str, float] = {}
        self.idle_allocated_seconds: dict[str, float] = {}

    def last_timestamp(self, uuid: str) -> int:
        """The timestamp to ask NVML for newer samples than (0 the first time: the whole buffer)."""
        return self.last_us.get(uuid, 0)

    def add(self, uuid: str, samples: Iterable[tuple[int, float]], allocated: bool) -> Integrated:
        """Fold new samples into the counters and return what they added. The first read of a card only
        sets the starting point: what happened before the exporter watched is not counted."""
        busy = idle = 0.0
        ordered = sorted(samples)
        previous = self.last_us.get(uuid)
        if previous is None:
            if ordered:
                self.last_us[uuid] = ordered[-1][0]
        else:
            for timestamp, share in ordered:
                if timestamp <= previous:
                    continue
                covered = min(timestamp - previous, MAX_SAMPLE_PERIOD_US) / 1e6
                busy += share * covered
                if allocated and share <= self.idle_threshold:
                    idle += covered
                previous = timestamp
            self.last_us[uuid] = previous
        self.busy_seconds[uuid] = self.busy_seconds.get(uuid, 0.0) + busy
        self.idle_allocated_seconds[uuid] = self.idle_allocated_seconds.get(uuid, 0.0) + idle
        return Integrated(busy, idle)
