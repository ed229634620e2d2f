"""The event metric families, from one snapshot of :class:`EventState` per scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.events.state import EventState, Labels


class EventCollector(Collector):
    """Counters and histograms are always there; the worker and task gauges only while the stream is
    connected (and past a short warm-up for heartbeats): a stream we cannot hear shows
    ``celery_events_up 0`` and no gauges, never zeros."""

    def __init__(self, state: EventState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        with self.state.lock:
            snap = self.state.snapshot()
        worker_labels = self.state.config.worker_labels

        up = GaugeMetricFamily("celery_events_up", "1 while the exporter is subscribed to the Celery event stream.")
        up.add_metric([], 1.0 if snap.up else 0.0)
        yield up
        received = CounterMetricFamily("celery_events_received", "Celery events read from the stream.")
        received.add_metric([], snap.received)
        yield received
        dropped = CounterMetricFamily(
            "celery_events_dropped", "Events read but not applied, by reason.", labels=["reason"]
        )
        for reason, n in sorted(snap.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        lost = CounterMetricFamily(
            "celery_events_lost",
            "Events that were sent but never arrived, as far as heartbeat gaps and task lifecycles show.",
            labels=["reason"],
        )
        for reason, n in sorted(snap.lost.items()):
            lost.add_metric([reason], n)
        yield lost
        reconnects = CounterMetricFamily("celery_events_reconnects", "Re-subscriptions after the stream was lost.")
        reconnects.add_metric([], snap.reconnects)
        yield reconnects

        tasks = CounterMetricFamily("celery_tasks", "Task events, by task name and state.", labels=["task", "state"])
        for (task, state), n in sorted(snap.tasks_total.items()):
            tasks.add_metric([task, state], n)
        yield tasks
        for name, doc, data in (
            ("celery_task_runtime_seconds", "Task run time (succeeded and failed tasks).", snap.runtime),
            (
                "celery_task_queue_wait_seconds",
                "From task-sent (or task-received when the client sends no task-sent) to task-started.",
                snap.queue_wait,
            ),
        ):
            histogram = HistogramMetricFamily(name, doc, labels=["task"])
            for task, (buckets, total) in sorted(data.items()):
                histogram.add_metric([task], buckets, total)
            yield histogram

        if not snap.gauges:
            return
        labels = ["queue", "worker"] if worker_labels else ["queue"]
        for name, doc, values in (
            ("active_analyses", "Analysis tasks started and not yet finished, on live workers.", snap.active),
            ("celery_workers", "Live workers consuming from the queue.", snap.workers),
            ("celery_worker_slots", "Pool processes of the live workers of the queue.", snap.slots),
            ("celery_worker_slots_busy", "Pool processes running a task, from heartbeats.", snap.busy),
        ):
            yield _gauge(name, doc, labels, values)


def _gauge(name: str, doc: str, labels: list[str], values: dict[Labels, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
