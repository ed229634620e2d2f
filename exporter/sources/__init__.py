"""The pieces the exporter runs side by side (broker poller, event consumer, GPU sampler).

Each one starts its own background work, contributes collectors, and may say whether it is ready.
A fault in one never stops another: each runs on its own thread and reports through its own ``_up``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

from prometheus_client.registry import Collector

from exporter.collectors.queues import QueueCollector
from lensing_core.poller import BrokerPoller
from lensing_sources.events.state import RunningSnapshot


class Source(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def collectors(self) -> Iterable[Collector]: ...

    def readiness(self) -> tuple[bool, str] | None:
        """(ready, why) for /readyz, or None when this source does not decide readiness."""
        ...


class BrokerSource:
    """Queue depth: the poller and its collector."""

    name = "broker"

    def __init__(
        self,
        poller: BrokerPoller,
        ready_within: float,
        running: Callable[[], RunningSnapshot] | None = None,
        running_version: Callable[[], Hashable] | None = None,
    ) -> None:
        self.poller = poller
        self.ready_within = ready_within
        self.running = running  # the event source's running tasks, for the backlog
        self.running_version = running_version

    def start(self) -> None:
        self.poller.start()

    def stop(self) -> None:
        self.poller.stop()

    def collectors(self) -> Iterable[Collector]:
        return [QueueCollector(self.poller, self.running, self.running_version)]

    def readiness(self) -> tuple[bool, str]:
        state = self.poller.state
        if state.snapshot is None:
            return False, f"no successful broker read yet ({state.last_error or 'starting'})"
        age = time.time() - state.snapshot.read_at
        if not state.up or age > self.ready_within:
            return False, f"last successful broker read {age:.1f}s ago ({state.last_error or 'stale'})"
        return True, f"broker read {age:.1f}s ago"
