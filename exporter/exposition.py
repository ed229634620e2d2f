"""Renders /metrics collector by collector, so a collector may hand over text it rendered ahead of time.

The queue families of a large broker (thousands of series) change once per poll; the broker
collector renders them on the poll thread right after each read, and a scrape only copies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from prometheus_client import exposition, openmetrics
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

OPENMETRICS_EOF = b"# EOF\n"


@runtime_checkable
class PrerenderedCollector(Protocol):
    def exposition(self, openmetrics: bool) -> bytes:
        """This collector's families in the text format (``openmetrics``: OpenMetrics, without ``# EOF``)."""
        ...


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def encode(families: Iterable[Metric], openmetrics_format: bool) -> bytes:
    """Families in the Prometheus text format or OpenMetrics (the latter without ``# EOF``)."""
    registry = _Families(families)
    if openmetrics_format:
        text = openmetrics.exposition.generate_latest(registry)
        return text[: -len(OPENMETRICS_EOF)] if text.endswith(OPENMETRICS_EOF) else text
    return exposition.generate_latest(registry)


def render(collectors: Sequence[Collector], accept: str) -> tuple[bytes, str]:
    """The /metrics body for an ``Accept`` header, and its content type."""
    _encoder, content_type = exposition.choose_encoder(accept)
    om = content_type.startswith("application/openmetrics-text")
    chunks = []
    for collector in collectors:
        if isinstance(collector, PrerenderedCollector):
            chunks.append(collector.exposition(om))
        else:
            chunks.append(encode(collector.collect(), om))
    if om:
        chunks.append(OPENMETRICS_EOF)
    return b"".join(chunks), content_type
