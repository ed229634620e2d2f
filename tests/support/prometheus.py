"""A real Prometheus (the Debian binary) and a pretend API that it scrapes, for the custom-metrics tests.

``RequestCounterServer`` exports ``http_requests_total{namespace,pod}`` for a few pretend pods, each
counter advanced on the clock at a known rate, so ``rate()`` over it has a known true value.
``PrometheusServer`` runs ``prometheus`` in a temporary directory on a free loopback port, scraping
the given targets every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from lensing_harness.processes import stop_process
from tests.support.services import free_port, wait_for

#: A short rate window, so a test does not wait two minutes for the default [2m] to fill (1 s scrapes).
TEST_WINDOW = "5s"
TEST_WINDOW_SECONDS = 5


def short_window_rules() -> dict[str, Any]:
    """The config file's PromQL sections as shipped, with the short window: http_requests_per_second for
    pods and namespaces, and an external api_requests_per_second by namespace."""
    w = TEST_WINDOW
    return {
        "customMetrics": [
            {
                "name": "http_requests_per_second",
                "query": f'sum by (pod) (rate(http_requests_total{{namespace="<ns>",pod=~"<pods>"<matchers>}}[{w}]))',
            },
            {
                "name": "http_requests_per_second",
                "resource": "namespaces",
                "query": f'sum(rate(http_requests_total{{namespace="<ns>"<matchers>}}[{w}]))',
            },
        ],
        "externalMetrics": [
            {
                "name": "api_requests_per_second",
                "query": f"sum by (namespace) (rate(http_requests_total{{<matchers>}}[{w}]))",
            },
        ],
    }


class ThreadedApp:
    """An aiohttp application on 127.0.0.1 (a free port), served by its own event loop in a thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    def build(self) -> web.Application:
        raise NotImplementedError

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.build(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class RequestCounterServer(ThreadedApp):
    """``/metrics`` with ``http_requests_total{namespace, pod} = rate * seconds since start``."""

    def __init__(self, rates: Mapping[tuple[str, str], float]) -> None:
        super().__init__()
        self.rates = dict(rates)
        self.started = time.time()
        self.scrapes = 0

    def exposition(self) -> str:
        elapsed = time.time() - self.started
        lines = ["# HELP http_requests_total Requests served.", "# TYPE http_requests_total counter"]
        for (namespace, pod), rate in sorted(self.rates.items()):
            lines.append(f'http_requests_total{{namespace="{namespace}",pod="{pod}"}} {rate * elapsed:.6f}')
        return "\n".join(lines) + "\n"

    async def _metrics(self, _request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(text=self.exposition(), content_type="text/plain")

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        return app


class PrometheusServer:
    """``prometheus`` on 127.0.0.1, 1 s scrapes of ``targets``; ``stop()``/``start()`` keep its data."""

    def __init__(self, targets: list[str], scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (scripts/setup-tools.sh installs it)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="lensing-prom-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (self.dir / "prometheus.yml").write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  evaluation_interval: {scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: api\n"
            "    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
        return False

    def start(self) -> PrometheusServer:
        log = open(self.dir / "prometheus.log", "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._ready, timeout=30, interval=0.1, what=f"prometheus on {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 15)
        self.proc = None

    def log(self) -> str:
        path = self.dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def prometheus_scraping(
    rates: Mapping[tuple[str, str], float],
) -> Iterator[tuple[PrometheusServer, RequestCounterServer]]:
    app = RequestCounterServer(rates).start()
    prom = PrometheusServer([app.target])
    try:
        prom.start()
        yield prom, app
    finally:
        prom.close()
        app.close()
