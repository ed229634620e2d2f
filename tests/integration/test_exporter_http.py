"""The exporter end to end: HTTP endpoints, an unreachable broker at start, losing the broker, and /readyz
with the event stream down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery

from exporter.app import Exporter
from exporter.cli import build_parser, build_sources
from exporter.sources import BrokerSource
from exporter.sources.events import EventSource
from lensing_core.brokers import open_reader
from lensing_core.poller import BrokerPoller
from tests.support.services import REPO, free_port, port_open, wait_for

pytestmark = pytest.mark.integration


def get(url: str, accept: str = "") -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def sample(body: str, name: str) -> float | None:
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


class RunningExporter:
    def __init__(self, exporter: Exporter, port: int) -> None:
        self.exporter = exporter
        self.base = f"http://127.0.0.1:{port}"
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._serve(exporter, port),), daemon=True
        )
        self._thread.start()
        wait_for(lambda: port_open("127.0.0.1", port), 10, what="exporter port")

    async def _serve(self, exporter: Exporter, port: int) -> None:
        self._stop = asyncio.Event()
        await exporter.serve("127.0.0.1", port, self._stop)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


@pytest.fixture
def serve() -> Iterator:  # type: ignore[type-arg]
    running: list[RunningExporter] = []

    def start(url: str, interval: float = 0.2) -> RunningExporter:
        poller = BrokerPoller(open_reader(url), interval, max_backoff=1.0, url_for_logs=url)
        exporter = RunningExporter(Exporter([BrokerSource(poller, ready_within=5.0)]), free_port())
        running.append(exporter)
        return exporter

    yield start
    for exporter in running:
        exporter.close()


@pytest.fixture
def serve_command_line() -> Iterator[Callable[..., RunningExporter]]:
    """The exporter with the sources its command line builds (as `lensing-metrics exporter` does), served
    in this process so that a test can look at them."""
    running: list[RunningExporter] = []

    def start(*argv: str) -> RunningExporter:
        sources = build_sources(build_parser().parse_args(argv))
        exporter = RunningExporter(Exporter(sources), free_port())
        running.append(exporter)
        return exporter

    yield start
    for exporter in running:
        exporter.close()


def test_endpoints_and_formats(redis_url: str, serve) -> None:  # type: ignore[no-untyped-def]
    app = Celery("producer", broker=redis_url)
    for i in range(6):
        app.send_task("lensing.analyse_lens", args=[i], queue="analyses", priority=i * 2)
    exporter = serve(redis_url)
    wait_for(lambda: 'celery_queue_length{queue="analyses"} 6.0' in get(exporter.base + "/metrics")[2], 15)
    status, ctype, body = get(exporter.base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert 'celery_queue_inflight{queue="analyses"} 0.0' in body
    assert 'celery_broker_up{transport="redis"} 1.0' in body
    assert "celery_broker_reads_total" in body and "# EOF" not in body
    status, ctype, body = get(exporter.base + "/metrics", "application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n") and body.count("# EOF") == 1
    assert 'celery_queue_length{queue="analyses"} 6.0' in body
    assert get(exporter.base + "/healthz")[:1] == (200,)
    status, _, text = get(exporter.base + "/readyz")
    assert status == 200 and text.startswith("ok broker")


def test_broker_loss_and_return(redis_server, serve) -> None:  # type: ignore[no-untyped-def]
    server = redis_server()
    app = Celery("producer", broker=server.url)
    for i in range(3):
        app.send_task("lensing.analyse_lens", args=[i], queue="analyses")
    exporter = serve(server.url)
    metrics = exporter.base + "/metrics"
    wait_for(lambda: sample(get(metrics)[2], 'celery_queue_length{queue="analyses"}') == 3.0, 15)

    server.stop()
    body = wait_for(lambda: (b := get(metrics)[2]) and sample(b, "celery_broker_up") == 0.0 and b, 15)
    assert sample(body, "celery_queue_length") is None and sample(body, "celery_queue_inflight") is None
    assert sample(body, 'celery_broker_read_errors_total{reason="connection"}')
    for _ in range(5):  # /metrics answers at once while the broker is gone
        started = time.monotonic()
        get(metrics)
        assert time.monotonic() - started < 1.0
    status, _, text = get(exporter.base + "/readyz")
    assert status == 503 and text.startswith("FAIL broker")
    assert get(exporter.base + "/healthz")[0] == 200

    server.start()  # same port, empty: the producer sends again
    app.send_task("lensing.analyse_lens", args=[9], queue="analyses")
    wait_for(lambda: sample(get(metrics)[2], 'celery_queue_length{queue="analyses"}') == 1.0, 30)
    assert sample(get(metrics)[2], "celery_broker_up") == 1.0
    wait_for(lambda: get(exporter.base + "/readyz")[0] == 200, 15)


def test_unreachable_broker_at_start_is_not_fatal() -> None:
    port, dead = free_port(), free_port()
    env = {**os.environ, "CELERY_BROKER_URL": f"redis://127.0.0.1:{dead}/0", "LENSING_POLL_INTERVAL": "0.2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lensing_metrics.cli", "exporter", "--listen", f"127.0.0.1:{port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 30, what="exporter port")
        base = f"http://127.0.0.1:{port}"
        body = wait_for(lambda: (b := get(base + "/metrics")[2]) and "read_errors_total{" in b and b, 15)
        assert sample(body, "celery_broker_up") == 0.0 and sample(body, "celery_queue_length") is None
        first = sample(body, 'celery_broker_read_errors_total{reason="connection"}') or 0
        wait_for(
            lambda: (
                (sample(get(base + "/metrics")[2], 'celery_broker_read_errors_total{reason="connection"}') or 0) > first
            ),
            15,
            what="another read attempt",
        )
        assert get(base + "/readyz")[0] == 503
        assert proc.poll() is None
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert err.count("cannot be read") == 1  # logged once, not on every retry


def test_readyz_does_not_depend_on_the_event_stream(redis_server, serve_command_line) -> None:  # type: ignore[no-untyped-def]
    """The broker is read while the event stream cannot subscribe: /readyz stays 200 (the queue depth the
    HPA needs is there) and only celery_events_up says that the stream is down."""
    server = redis_server()
    admin = redis.Redis.from_url(server.url)
    # everything the broker reader and Celery's control client do, but no PSUBSCRIBE: the stream alone fails
    admin.acl_setuser(
        "exporter",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-psubscribe"],
    )
    admin.close()
    app = Celery("producer", broker=server.url)
    for i in range(2):
        app.send_task("lensing.analyse_lens", args=[i], queue="analyses")
    url = f"redis://exporter:secret@127.0.0.1:{server.port}/0"
    exporter = serve_command_line("--broker-url", url, "--poll-interval", "0.2", "--events")
    (events,) = [s for s in exporter.exporter.sources if isinstance(s, EventSource)]
    metrics = exporter.base + "/metrics"

    def stream_refused_while_broker_read() -> bool:
        body = get(metrics)[2]
        return (
            sample(body, 'celery_queue_length{queue="analyses"}') == 2.0
            and sample(body, "celery_events_up") == 0.0
            and "'psubscribe'" in (events.consumer.last_error or "")
        )

    wait_for(stream_refused_while_broker_read, 15, what="the queue read and the event stream refused")
    deadline = time.monotonic() + 2  # the consumer keeps retrying meanwhile
    while time.monotonic() < deadline:
        status, _, text = get(exporter.base + "/readyz")
        assert status == 200 and text.startswith("ok broker"), text
        time.sleep(0.2)
    # each retry reads as up for the instant between connecting and the refusal: waited for, not sampled once
    wait_for(lambda: sample(get(metrics)[2], "celery_events_up") == 0.0, 5, what="celery_events_up still 0")
