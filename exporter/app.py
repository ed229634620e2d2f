"""Wires the sources, the registry and the HTTP server together, and runs until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from aiohttp import web
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.http import build_app
from exporter.sources import Source
from lensing_core.background import RestartCollector
from lensing_core.net import Limits, Rejections, serve_until

log = logging.getLogger(__name__)

#: an idle plain-HTTP connection costs about 8 KB (docs/benchmarks.md): 1,024 fit the chart's limit many times
MAX_CONNECTIONS = 1024


class Exporter:
    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = list(sources)
        self.collectors: list[Collector] = [c for source in self.sources for c in source.collectors()]
        self.collectors.append(RestartCollector())
        # The registry is for in-process readers (tests, prometheus_client tools); /metrics renders the
        # collectors itself so that pre-rendered queue families are reused (exporter/exposition.py).
        self.registry = CollectorRegistry()
        self.rejections = Rejections("lensing_exporter_http_rejected_total", logging.getLogger("exporter.http"))
        self.collectors.append(self.rejections)
        for collector in self.collectors:
            self.registry.register(collector)

    def readiness(self) -> list[tuple[str, bool, str]]:
        checks = []
        for source in self.sources:
            verdict = source.readiness()
            if verdict is not None:
                checks.append((source.name, verdict[0], verdict[1]))
        return checks

    def start_sources(self) -> None:
        for source in self.sources:
            source.start()

    def stop_sources(self) -> None:
        for source in reversed(self.sources):
            try:
                source.stop()
            except Exception:
                log.exception("stopping %s failed", source.name)

    async def serve(
        self, host: str, port: int, stop: asyncio.Event | None = None, *, limits: Limits | None = None
    ) -> None:
        """Serve until ``stop`` is set (or SIGINT/SIGTERM when ``stop`` is None)."""
        stop = stop or _stop_on_signals()
        runner = web.AppRunner(build_app(self.collectors, self.readiness), access_log=None)
        await serve_until(
            runner,
            host,
            port,
            stop,
            name="exporter",
            url=f"http://{host}:{port}/metrics",
            log=log,
            start=self.start_sources,
            shutdown=self.stop_sources,
            limits=limits or Limits(max_connections=MAX_CONNECTIONS),
            rejections=self.rejections,
        )


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
