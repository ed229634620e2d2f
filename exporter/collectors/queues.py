"""``celery_queue_*`` and ``celery_broker_*`` from the poller's last read."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.exposition import encode
from lensing_core import catalog
from lensing_core.brokers import BrokerSnapshot
from lensing_core.poller import BrokerPoller, PollState
from lensing_sources.backlog import queue_work
from lensing_sources.events.state import RunningSnapshot


class QueueCollector(Collector):
    """Queue series exist only while the last read succeeded: a broker that cannot be read
    shows ``celery_broker_up 0`` and no queue numbers at all, never zeros.

    The queue families are built, and rendered, once per successful read on the poll thread
    (:meth:`prerender`); scrapes reuse them. The health families are built at each scrape, and so are
    running, backlog and workers needed when an event stream is consumed (they follow it between reads);
    without one they depend on the read alone and are prerendered with the queue families.

    ``running`` gives the event stream's running tasks (None: no events are consumed). Where the
    running part of a queue is not known, its running and backlog series are absent and
    ``celery_queue_running_up{queue,reason}`` is 0 and says why.
    """

    def __init__(
        self,
        poller: BrokerPoller,
        running: Callable[[], RunningSnapshot] | None = None,
        running_version: Callable[[], Hashable] | None = None,
    ) -> None:
        self.poller = poller
        self.running = running
        #: equal while ``running()`` would answer the same: the work families are then reused, rendered
        self.running_version = running_version
        self._lock = threading.Lock()
        self._for: BrokerSnapshot | None = None
        self._families: list[Metric] = []
        self._rendered: dict[bool, bytes] = {}
        self._work_for: tuple[BrokerSnapshot | None, Hashable] = (None, None)
        self._work_rendered: dict[bool, bytes] = {}
        poller.add_listener(self.prerender)

    def describe(self) -> Iterator[Metric]:
        return catalog.describe("exporter-broker")

    def collect(self) -> Iterator[Metric]:
        yield from self.health_families()
        yield from self._queue_state()[0]
        yield from self._live_work_families()

    def exposition(self, openmetrics: bool) -> bytes:
        families, rendered = self._queue_state()
        text = rendered.get(openmetrics)
        if text is None:
            text = encode(families, openmetrics)
            with self._lock:
                if self._for is self.poller.state.snapshot:
                    self._rendered[openmetrics] = text
        return encode(list(self.health_families()), openmetrics) + self._work_exposition(openmetrics) + text

    def _work_exposition(self, openmetrics: bool) -> bytes:
        """The live work families rendered, reused while neither the broker read nor the event state moved."""
        if self.running is None:
            return b""
        snapshot = self.poller.state.snapshot
        version = self.running_version() if self.running_version is not None else object()
        with self._lock:
            if self._work_for[0] is snapshot and self._work_for[1] == version and openmetrics in self._work_rendered:
                return self._work_rendered[openmetrics]
        text = encode(self.work_families(), openmetrics)
        with self._lock:
            if not (self._work_for[0] is snapshot and self._work_for[1] == version):
                self._work_for, self._work_rendered = (snapshot, version), {}
            self._work_rendered[openmetrics] = text
        return text

    def _live_work_families(self) -> list[Metric]:
        """The work families that follow the event stream, built now; without events they depend on the
        broker read alone and are prerendered with the queue families."""
        return self.work_families() if self.running is not None else []

    def _families_of(self, snapshot: BrokerSnapshot) -> list[Metric]:
        families = queue_families(snapshot)
        if self.running is None:
            families += self.work_families_of(snapshot)
        return families

    def work_families(self) -> list[Metric]:
        """``celery_queue_running``, ``_backlog``, ``_running_up``, ``_workers_needed`` and its ``_up`` now."""
        state = self.poller.state
        if not state.up or state.snapshot is None:
            return []
        return self.work_families_of(state.snapshot)

    def work_families_of(self, snapshot: BrokerSnapshot) -> list[Metric]:
        work = queue_work(snapshot, self.running() if self.running is not None else None)
        running = catalog.gauge("celery_queue_running")
        backlog = catalog.gauge("celery_queue_backlog")
        running_up = catalog.gauge("celery_queue_running_up")
        needed = catalog.gauge("celery_queue_workers_needed")
        needed_up = catalog.gauge("celery_queue_workers_needed_up")
        for queue, item in sorted(work.items()):
            running_up.add_metric([queue, item.unknown or ""], 0.0 if item.unknown else 1.0)
            if item.running is not None and item.unknown is None:
                running.add_metric([queue], item.running)
            if item.backlog is not None:
                backlog.add_metric([queue], item.backlog)
            needed_up.add_metric([queue, item.needed_unknown or ""], 0.0 if item.needed_unknown else 1.0)
            if item.workers_needed is not None:
                needed.add_metric([queue], item.workers_needed)
        return [running, backlog, running_up, needed, needed_up]

    def prerender(self, state: PollState) -> None:
        """Poll listener: build and render the queue families of a new snapshot (text format)."""
        if state.up and state.snapshot is not None:
            families = self._families_of(state.snapshot)
            text = encode(families, False)
            with self._lock:
                self._for, self._families, self._rendered = state.snapshot, families, {False: text}

    def _queue_state(self) -> tuple[list[Metric], dict[bool, bytes]]:
        state = self.poller.state
        if not state.up or state.snapshot is None:
            return [], {False: b"", True: b""}
        with self._lock:
            if self._for is state.snapshot:
                return self._families, self._rendered
        families = self._families_of(state.snapshot)  # a read the listener has not seen yet
        with self._lock:
            self._for, self._families, self._rendered = state.snapshot, families, {}
        return families, {}

    def health_families(self) -> Iterator[Metric]:
        state = self.poller.state
        transport = self.poller.reader.transport
        up = catalog.gauge("celery_broker_up")
        up.add_metric([transport], 1.0 if state.up else 0.0)
        yield up

        errors = catalog.counter("celery_broker_read_errors_total")
        for reason, count in sorted(self.poller.errors.items()):
            errors.add_metric([reason], count)
        yield errors

        reads = catalog.counter("celery_broker_reads_total")
        reads.add_metric([], self.poller.reads_total)
        yield reads

        snapshot = state.snapshot
        if snapshot is not None:
            last = catalog.gauge("celery_broker_last_success_timestamp_seconds")
            last.add_metric([], snapshot.read_at)
            yield last
            age = catalog.gauge("celery_broker_read_age_seconds")
            age.add_metric([], max(time.time() - snapshot.read_at, 0.0))
            yield age
            duration = catalog.gauge("celery_broker_read_duration_seconds")
            duration.add_metric([], snapshot.duration)
            yield duration


def queue_families(snapshot: BrokerSnapshot) -> list[Metric]:
    length = catalog.gauge("celery_queue_length")
    inflight = catalog.gauge("celery_queue_inflight")
    delayed = catalog.gauge("celery_queue_delayed")
    for queue, depth in sorted(snapshot.queues.items()):
        length.add_metric([queue], depth.waiting)
        if depth.inflight is not None:
            inflight.add_metric([queue], depth.inflight)
        if depth.delayed is not None:
            delayed.add_metric([queue], depth.delayed)
    return [length, inflight, delayed]
