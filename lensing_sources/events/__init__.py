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
from lensing_sources.events.options import ADAPTER_OPTIONS, state_config
from lensing_sources.events.options import add_arguments as _add_arguments
from lensing_sources.events.state import ActiveTask, EventState, RunningSnapshot
from lensing_sources.events.stream import AmqpEventStream, EventStream, RedisEventStream

log = logging.getLogger(__name__)

__all__ = ["ADAPTER_OPTIONS", "EventSource", "add_arguments", "build_source", "has_events", "open_stream", "source_for"]


class EventSource:
    name = "events"

    def __init__(self, consumer: EventConsumer, control: WorkerControl | None = None) -> None:
        self.consumer = consumer
        self.control = control
        self.state = consumer.state

    def running(self) -> RunningSnapshot:
        """The running tasks per queue now, for the backlog."""
        with self.state.lock:
            return self.state.running_snapshot()

    def running_version(self) -> tuple[int, int]:
        """Equal while ``running()`` would give the same answer: the state's version and the second (worker
        timeouts, the warm-up and drains turn on the clock, to the second)."""
        return self.state.version, int(self.state.clock())

    def running_by_worker(self) -> dict[str, int] | None:
        """Running tasks per live worker now (None: not known), for the pod deletion cost."""
        with self.state.lock:
            return self.state.running_by_worker()

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


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Options of the event consumer (all added to `lensing-metrics exporter`, ``ADAPTER_OPTIONS`` to the
    adapter)."""
    _add_arguments(parser, only)


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
    return source_for(args.broker_url, args.transport_options or (), args)


def has_events(broker_url: str) -> bool:
    """Whether Celery sends events over this broker (Redis and RabbitMQ; not SQS)."""
    return transport_of(broker_url) in ("redis", "amqp")


def source_for(broker_url: str, transport_options: Iterable[str], args: argparse.Namespace) -> EventSource:
    """The event source of one broker. Where the broker gives counts, not task ids (RabbitMQ), the state
    learns which tasks are acknowledged while they run, for the backlog."""
    stream, control_options = open_stream(broker_url, transport_options)
    state = EventState(state_config(args, learn_acks=transport_of(broker_url) == "amqp"))

    def worker_info(hostname: str, queues: list[str] | None, slots: int | None) -> None:
        with state.lock:
            state.set_worker_info(hostname, queues, slots)

    def active_tasks(hostname: str, tasks: list[ActiveTask], reserved: list[ActiveTask]) -> None:
        with state.lock:
            state.set_active_tasks(hostname, tasks, reserved)

    control = WorkerControl(
        broker_url, control_options, worker_info, args.enable_events_interval, on_active_tasks=active_tasks
    )
    consumer = EventConsumer(
        stream,
        state,
        on_connected=control.connected,
        on_new_workers=control.new_workers,
        on_unresolved=control.unresolved,
    )
    return EventSource(consumer, control)
