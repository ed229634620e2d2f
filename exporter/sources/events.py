"""The event source as the exporter runs it: lensing_sources.events plus its collector."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from prometheus_client.registry import Collector

from exporter.collectors.events import EventCollector
from lensing_sources import events
from lensing_sources.events import add_arguments

__all__ = ["EventSource", "add_arguments", "build_source"]


class EventSource(events.EventSource):
    def collectors(self) -> Iterable[Collector]:
        return [EventCollector(self.state)]


def build_source(args: argparse.Namespace) -> EventSource | None:
    source = events.build_source(args)
    return None if source is None else EventSource(source.consumer, source.control)
