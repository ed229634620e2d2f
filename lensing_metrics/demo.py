"""`make demo`: a local broker, a real Celery worker, the exporter, and a live view of queue depth.

With CELERY_BROKER_URL unset it starts everything itself: a private `redis-server` on a free port
(fakeredis's TCP server where the binary is missing), a Celery worker on lensing_harness.sample_tasks
(queues `analyses` and `cpu`), a burst of tasks across queues and priorities then a trickle, and the
exporter on a free port. With CELERY_BROKER_URL set it only runs the exporter against that broker.
The view is read from the exporter's own /metrics, so it shows what Prometheus would scrape.

    python -m lensing_metrics.demo [--duration SECONDS] [--burst N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lensing_core.options import positive_float, positive_int
from lensing_harness.localredis import start_redis_server
from lensing_harness.ports import free_port, wait_port
from lensing_harness.processes import stop_process
from lensing_harness.sample_worker import start_sample_worker

QUEUES = ("analyses", "cpu")
REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# The live view


@dataclass
class Metrics:
    """The families of one /metrics scrape: ``values[name][labels] = value``, labels as sorted tuples."""

    values: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        metrics = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                series = metrics.values.setdefault(sample.name, {})
                series[tuple(sorted(sample.labels.items()))] = sample.value
        return metrics

    def has(self, name: str) -> bool:
        return name in self.values

    def by_queue(self, name: str) -> dict[str, float]:
        return {dict(labels).get("queue", ""): value for labels, value in self.values.get(name, {}).items()}

    def value(self, name: str) -> float | None:
        series = self.values.get(name, {})
        return sum(series.values()) if series else None


#: The hook for other components' lines under the table (the adapter adds its kubectl/HPA view here):
#: each function takes the parsed /metrics of the exporter and returns lines to print (may be empty).
EXTRA_LINES: list[Callable[[Metrics], list[str]]] = []


def extra_lines(metrics: Metrics) -> list[str]:
    lines: list[str] = []
    for hook in EXTRA_LINES:
        try:
            lines.extend(hook(metrics))
        except Exception as exc:  # a broken hook must not stop the view
            lines.append(f"({getattr(hook, '__name__', 'hook')} failed: {exc})")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def render_table(metrics: Metrics) -> list[str]:
    """Per-queue waiting, in flight, running and backlog (the exporter's: "-" while the running part is not
    known), with the event metrics' columns and the workers needed when they exist."""
    waiting = metrics.by_queue("celery_queue_length")
    columns: list[tuple[str, dict[str, float]]] = [
        ("waiting", waiting),
        ("in flight", metrics.by_queue("celery_queue_inflight")),
        ("running", metrics.by_queue("celery_queue_running")),
        ("backlog", metrics.by_queue("celery_queue_backlog")),
    ]
    for header, name in (("active", "active_analyses"), ("workers", "celery_workers")):
        if metrics.has(name):
            columns.append((header, metrics.by_queue(name)))
    if metrics.has("celery_worker_slots"):
        busy, slots = metrics.by_queue("celery_worker_slots_busy"), metrics.by_queue("celery_worker_slots")
        columns.append(("slots busy", {q: busy.get(q, 0.0) for q in slots}))
        columns.append(("slots", slots))
    if metrics.has("celery_queue_workers_needed"):  # what an HPA at AverageValue 1 would ask for
        columns.append(("needed", metrics.by_queue("celery_queue_workers_needed")))
    queues = sorted(set(waiting) | {q for _, col in columns[4:] for q in col} - {""})
    width = max([len("queue"), *(len(q) for q in queues)])
    header = "queue".ljust(width) + "".join(f"  {title:>10}" for title, _ in columns)
    lines = [header, "-" * len(header)]
    for queue in queues:
        lines.append(queue.ljust(width) + "".join(f"  {_num(col.get(queue)):>10}" for _, col in columns))
    if not queues:
        lines.append("(no queues yet)")
    up = metrics.value("celery_broker_up")
    duration = metrics.value("celery_broker_read_duration_seconds")
    state = "broker up" if up == 1.0 else "BROKER DOWN: queue series absent, never zero"
    read = f", last read {duration * 1000:.1f} ms" if duration is not None else ""
    lines.append("")
    lines.append(f"{state}{read}")
    return lines


def frame(metrics: Metrics | None, error: str | None, started: float, header: list[str]) -> list[str]:
    lines = [*header, f"t+{time.monotonic() - started:5.1f}s   {time.strftime('%H:%M:%S')}", ""]
    if metrics is None:
        lines.append(f"exporter not answering yet ({error})")
        return lines
    lines.extend(render_table(metrics))
    lines.extend(extra_lines(metrics))
    return lines


# ---------------------------------------------------------------------------------------------
# The pieces it runs


class LocalRedis:
    """A private redis-server on a free port, or fakeredis's TCP server where the binary is missing."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="lm-demo-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.fake: object | None = None
        binary = shutil.which("redis-server")
        if binary:
            self.proc = start_redis_server(self.port, self.dir, binary=binary)
            self.kind = f"private redis-server, pid {self.proc.pid}"
        else:
            from fakeredis import TcpFakeServer

            server = TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.fake = server
            self.kind = "fakeredis TCP server (no redis-server binary)"
        wait_port(self.port, 15)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self.fake is not None:
            self.fake.shutdown()  # type: ignore[attr-defined]
            self.fake.server_close()  # type: ignore[attr-defined]
        shutil.rmtree(self.dir, ignore_errors=True)


class Worker:
    """A real `celery worker` on the sample tasks, in its own process group (stopped as a whole)."""

    def __init__(self, broker_url: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="lm-demo-worker-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = start_sample_worker(
            broker_url, QUEUES, hostname=f"demo-{os.getpid()}@%h", log=self.log, concurrency=2, prefetch=2
        )

    def stop(self) -> None:
        stop_process(self.proc, sig=signal.SIGQUIT, group=True)  # cold shutdown: demo tasks need not finish
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


class Producer:
    """A burst across queues and priorities, then a trickle, so the view keeps moving."""

    def __init__(self, broker_url: str, burst: int) -> None:
        from celery import Celery

        self.app = Celery("lensing_demo_producer", broker=broker_url)
        # task-sent events tell the exporter each task's queue (the worker consumes two)
        self.app.conf.task_send_sent_event = True
        self.burst = burst
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="demo-producer", daemon=True)
        self._sent = 0

    def _send(self, queue: str, seconds: float) -> None:
        self._sent += 1
        self.app.send_task(
            "lensing.analyse_lens", args=[self._sent, seconds], queue=queue, priority=random.choice((0, 3, 6, 9))
        )

    def start(self) -> None:
        for i in range(self.burst):
            self._send("analyses" if i % 3 else "cpu", random.uniform(1.0, 4.0))
        self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(2.5):
            with contextlib.suppress(Exception):  # the broker may be going away during shutdown
                self._send(random.choice(QUEUES), random.uniform(1.0, 4.0))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.app.close()


class InProcessExporter:
    """The real exporter (same options, sources and HTTP app as `lensing-metrics exporter`) on a thread."""

    def __init__(self, broker_url: str, port: int) -> None:
        from exporter import cli
        from exporter.app import Exporter

        args = cli.build_parser().parse_args(
            ["--broker-url", broker_url, "--listen", f"127.0.0.1:{port}", "--poll-interval", "0.5"]
        )
        self.exporter = Exporter(cli.build_sources(args))
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        await self.exporter.serve("127.0.0.1", self.port, self._stop)

    def start(self) -> None:
        self._thread.start()
        wait_port(self.port, 15)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


@contextlib.contextmanager
def _stopped_on_exit(stop: Callable[[], None]) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            stop()


def _signal_as_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lensing_metrics.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS", help="stop after this long")
    parser.add_argument("--burst", type=positive_int, default=60, help="tasks sent at start (default 60)")
    parser.add_argument(
        "--refresh", type=positive_float, default=1.0, metavar="SECONDS", help="view refresh (default 1)"
    )
    args = parser.parse_args(argv)
    # closing the terminal (SIGHUP) and `kill` (SIGTERM) clean up as Ctrl-C does
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _signal_as_interrupt)
    from lensing_core.logsetup import configure_logging

    configure_logging("warning")
    interactive = sys.stdout.isatty()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            broker_url = os.environ.get("CELERY_BROKER_URL", "")
            header = ["lensing-metrics demo   (Ctrl-C stops)"]
            if broker_url:
                from lensing_core.brokers import redact_url

                header.append(f"broker: {redact_url(broker_url)} (from CELERY_BROKER_URL; watching only)")
            else:
                local = LocalRedis()
                stack.enter_context(_stopped_on_exit(local.stop))
                broker_url = local.url
                worker = Worker(broker_url)
                stack.enter_context(_stopped_on_exit(worker.stop))
                producer = Producer(broker_url, args.burst)
                stack.enter_context(_stopped_on_exit(producer.stop))
                producer.start()
                header.append(f"broker: {broker_url} ({local.kind})")
                header.append(f"worker: pid {worker.proc.pid}, queues {','.join(QUEUES)}, 2 processes x prefetch 2")
            exporter = InProcessExporter(broker_url, free_port())
            exporter.start()
            stack.enter_context(_stopped_on_exit(exporter.stop))
            url = f"http://127.0.0.1:{exporter.port}/metrics"
            header.append(f"exporter: {url}")
            from lensing_harness.adapter_process import AdapterDemo

            adapter = AdapterDemo(broker_url)
            stack.enter_context(_stopped_on_exit(adapter.stop))
            EXTRA_LINES.append(adapter.lines)
            header.extend(adapter.header_lines())
            header.append("")
            while args.duration is None or time.monotonic() - started < args.duration:
                metrics, error = None, None
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        metrics = Metrics.parse(response.read().decode())
                except OSError as exc:
                    error = str(exc)
                lines = frame(metrics, error, started, header)
                if interactive:
                    sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
                else:
                    sys.stdout.write("\n".join(lines) + "\n\n")
                sys.stdout.flush()
                time.sleep(args.refresh)
        except KeyboardInterrupt:
            pass
        print("stopping: adapter, exporter, producer, worker, broker", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
