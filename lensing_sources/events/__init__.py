"""Celery event-stream metrics: active analyses, task counts and durations, live workers and their slots.

``consumer`` reads the stream (``stream``: Redis pub/sub or RabbitMQ) into ``state`` (bounded, with
expiry); ``control`` asks workers for their queues and pool size and to send events; ``collector``
(exporter.collectors.events, in the exporter) yields the families from a snapshot of the state.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from typing import Any

from lensing_core.brokers import BrokerConfigError, open_redis, transport_of
from lensing_sources.events.consumer import EventConsumer
from lensing_sources.events.control import WorkerControl
from lensing_sources.events.options import add_arguments as _add_arguments
from lensing_sources.events.options import state_config
from lensing_sources.events.state import ActiveTask, EventState
from lensing_sources.events.stream import AmqpEventStream, EventStream, RedisEventStream

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
        client, prefix, options = open_redis(broker_url, transport_options)
        return RedisEventStream(client, prefix), options
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
