"""The event metric families, from one snapshot of :class:`EventState` per scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lensing_core import catalog
from lensing_sources.events.state import EventState, Labels


class EventCollector(Collector):
    """Counters and histograms are always there; the worker and task gauges only while the stream is
    connected (and past a short warm-up for heartbeats): a stream we cannot hear shows
    ``celery_events_up 0`` and no gauges, never zeros."""

    def __init__(self, state: EventState) -> None:
        self.state = state

    def describe(self) -> Iterator[Metric]:
        return catalog.describe("exporter-events")

    def collect(self) -> Iterator[Metric]:
        with self.state.lock:
            snap = self.state.snapshot()
        worker_labels = self.state.config.worker_labels

        up = catalog.gauge("celery_events_up")
        up.add_metric([], 1.0 if snap.up else 0.0)
        yield up
        received = catalog.counter("celery_events_received_total")
        received.add_metric([], snap.received)
        yield received
        dropped = catalog.counter("celery_events_dropped_total")
        for reason, n in sorted(snap.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        lost = catalog.counter("celery_events_lost_total")
        for reason, n in sorted(snap.lost.items()):
            lost.add_metric([reason], n)
        yield lost
        reconnects = catalog.counter("celery_events_reconnects_total")
        reconnects.add_metric([], snap.reconnects)
        yield reconnects

        tasks = catalog.counter("celery_tasks_total")
        for (task, state), n in sorted(snap.tasks_total.items()):
            tasks.add_metric([task, state], n)
        yield tasks
        for name, data in (
            ("celery_task_runtime_seconds", snap.runtime),
            ("celery_task_queue_wait_seconds", snap.queue_wait),
        ):
            histogram = catalog.histogram(name)
            for task, (buckets, total) in sorted(data.items()):
                histogram.add_metric([task], buckets, total)
            yield histogram

        if not snap.gauges:
            return
        labels = ["queue", "worker"] if worker_labels else ["queue"]
        for name, values in (
            ("active_analyses", snap.active),
            ("celery_workers", snap.workers),
            ("celery_worker_slots", snap.slots),
            ("celery_worker_slots_busy", snap.busy),
        ):
            yield _gauge(name, labels, values)


def _gauge(name: str, labels: list[str], values: dict[Labels, int]) -> GaugeMetricFamily:
    family = catalog.gauge(name, labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
