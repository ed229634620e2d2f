"""Celery event-stream metrics: active analyses, task counts and durations, live workers and their slots.

``consumer`` reads the stream (``stream``: Redis pub/sub or RabbitMQ) into ``state`` (bounded, with
expiry); ``control`` asks workers for their queues and pool size and to send events; ``collector``
yields the families from a snapshot of the state.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client.registry import Collector

from exporter.brokers import BrokerConfigError, open_reader, transport_of
from exporter.brokers.options import parse_transport_options
from exporter.events.collector import EventCollector
from exporter.events.consumer import EventConsumer
from exporter.events.control import WorkerControl
from exporter.events.options import add_arguments as _add_arguments
from exporter.events.options import state_config
from exporter.events.state import ActiveTask, EventState
from exporter.events.stream import AmqpEventStream, EventStream, RedisEventStream

log = logging.getLogger(__name__)

__all__ = ["EventSource", "add_arguments", "build_source", "open_stream"]


class EventSource:
    name = "events"

    def __init__(self, consumer: EventConsumer, control: WorkerControl | None = None) -> None:
        self.consumer = consumer
        self.control = control
        self.state = consumer.state

    def start(self) -> None:
        if self.control is not None:
            self.control.start()
        self.consumer.start()

    def stop(self) -> None:
        self.consumer.stop()
        if self.control is not None:
            self.control.stop()

    def collectors(self) -> Iterable[Collector]:
        return [EventCollector(self.state)]

    def readiness(self) -> None:
        # The queue depth the HPA needs does not depend on events: an event stream that is down
        # shows in celery_events_up, it does not take the exporter out of its Service.
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the event consumer (added to `lensing-metrics exporter`)."""
    _add_arguments(parser)


def open_stream(broker_url: str, transport_options: Iterable[str]) -> tuple[EventStream, dict[str, Any]]:
    """The event stream of the broker, and the transport options Celery's control client needs."""
    family = transport_of(broker_url)
    if family == "redis":
        from exporter.brokers.redis import RedisQueueReader

        items = list(transport_options)
        reader = open_reader(broker_url, items)  # one way to reach Redis: URL, TLS, sentinel, timeouts
        assert isinstance(reader, RedisQueueReader)
        return RedisEventStream(reader.client, reader.prefix), parse_transport_options(items, "redis")
    if family == "amqp":
        return AmqpEventStream(broker_url), {}
    raise BrokerConfigError(f"Celery events are not available on {family}: run with --no-events")


def build_source(args: argparse.Namespace) -> EventSource | None:
    """The event consumer source, or None when events are turned off (or the broker has none)."""
    if not args.events:
        return None
    if not args.broker_url:  # a GPU-only exporter: the broker source reports a missing URL where one is needed
        return None
    if transport_of(args.broker_url) == "sqs":
        log.warning("Celery sends no events over SQS: event metrics are off (--no-events silences this)")
        return None
    stream, control_options = open_stream(args.broker_url, args.transport_options or ())
    state = EventState(state_config(args))

    def worker_info(hostname: str, queues: list[str] | None, slots: int | None) -> None:
        with state.lock:
            state.set_worker_info(hostname, queues, slots)

    def active_tasks(hostname: str, tasks: list[ActiveTask], reserved: list[ActiveTask]) -> None:
        with state.lock:
            state.set_active_tasks(hostname, tasks, reserved)

    control = WorkerControl(
        args.broker_url, control_options, worker_info, args.enable_events_interval, on_active_tasks=active_tasks
    )
    consumer = EventConsumer(
        stream,
        state,
        on_connected=control.connected,
        on_new_workers=control.new_workers,
        on_unresolved=control.unresolved,
    )
    return EventSource(consumer, control)
