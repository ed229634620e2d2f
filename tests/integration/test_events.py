"""The event consumer against the real Redis and RabbitMQ, with real Celery workers."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from celery import Celery
from prometheus_client.registry import CollectorRegistry

from exporter.cli import build_parser
from exporter.sources import events
from exporter.sources.events import EventSource
from tests.support.services import REPO, free_port, wait_for

pytestmark = pytest.mark.integration

ANALYSES = {"queue": "analyses"}


class Probe:
    """An event source started in-process, read through a registry as Prometheus would."""

    def __init__(self, broker_url: str, *options: str) -> None:
        args = build_parser().parse_args(["--broker-url", broker_url, "--enable-events-interval", "0", *options])
        source = events.build_source(args)
        assert isinstance(source, EventSource)
        self.source = source
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in source.collectors():
            self.registry.register(collector)
        source.start()

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def count(self, task: str, state: str) -> float:
        return self.value("celery_tasks_total", task=task, state=state) or 0.0

    def stop(self) -> None:
        self.source.stop()


@pytest.fixture
def probe() -> Iterator[type[Probe]]:
    started: list[Probe] = []

    class Started(Probe):
        def __init__(self, broker_url: str, *options: str) -> None:
            super().__init__(broker_url, *options)
            started.append(self)

    yield Started
    for p in started:
        p.stop()


def producer(url: str) -> Celery:
    app = Celery("producer", broker=url, set_as_current=False)
    app.conf.task_send_sent_event = True
    return app


def test_analyses_rise_and_fall_and_each_task_counts_once(redis_url, celery_worker, probe) -> None:  # type: ignore[no-untyped-def]
    p = probe(redis_url, "--analysis-task", "lensing.analyse_*")
    celery_worker(redis_url, concurrency=3, events=True)
    wait_for(lambda: p.value("celery_workers", **ANALYSES) == 1, 60, what="the worker in celery_workers")
    assert wait_for(lambda: p.value("celery_worker_slots", **ANALYSES), 30, what="pool size") == 3
    app = producer(redis_url)
    for i in range(3):
        app.send_task("lensing.analyse_lens", args=[i, 5], queue="analyses")
    app.send_task("lensing.fail", queue="analyses")
    app.send_task("lensing.flaky", queue="analyses")

    wait_for(lambda: p.value("active_analyses", **ANALYSES) == 3, 30, what="3 active analyses")
    wait_for(lambda: p.value("celery_worker_slots_busy", **ANALYSES) == 3, 30, what="3 busy slots")
    wait_for(lambda: p.count("lensing.analyse_lens", "succeeded") == 3, 60, what="3 analyses succeeded")
    assert p.value("active_analyses", **ANALYSES) == 0
    wait_for(lambda: p.count("lensing.flaky", "succeeded") == 1, 30, what="flaky task succeeded on retry")

    for state in ("sent", "received", "started", "succeeded"):
        assert p.count("lensing.analyse_lens", state) == 3, state
    assert p.value("celery_task_runtime_seconds_count", task="lensing.analyse_lens") == 3
    assert p.value("celery_task_runtime_seconds_sum", task="lensing.analyse_lens") >= 15  # type: ignore[operator]
    assert p.value("celery_task_queue_wait_seconds_count", task="lensing.analyse_lens") == 3
    assert p.count("lensing.fail", "failed") == 1
    assert p.count("lensing.fail", "succeeded") == 0
    assert p.count("lensing.flaky", "retried") == 1
    assert p.count("lensing.flaky", "started") == 2
    assert p.value("celery_events_up") == 1
    assert p.value("celery_events_lost_total", reason="heartbeat_gap") is None


def test_sigkilled_worker_leaves_within_the_worker_timeout(redis_url, celery_worker, probe) -> None:  # type: ignore[no-untyped-def]
    p = probe(redis_url, "--worker-timeout", "4")
    worker = celery_worker(redis_url, concurrency=1, events=True)
    producer(redis_url).send_task("lensing.analyse_lens", args=[1, 120], queue="analyses")
    wait_for(lambda: p.value("active_analyses", **ANALYSES) == 1, 60, what="the analysis running")
    assert p.value("celery_workers", **ANALYSES) == 1
    worker.kill()
    killed = time.monotonic()
    wait_for(lambda: p.value("celery_workers", **ANALYSES) == 0, 30, what="the killed worker gone")
    assert p.value("active_analyses", **ANALYSES) == 0
    assert p.value("celery_worker_slots_busy", **ANALYSES) == 0
    # the gauges fall when the timeout passes, not later (the sweep runs every second; generous for a busy box)
    assert time.monotonic() - killed < 4 + 6


def test_worker_without_events_is_made_to_send_them(redis_url, celery_worker, probe) -> None:  # type: ignore[no-untyped-def]
    p = probe(redis_url, "--enable-events-interval", "1")
    celery_worker(redis_url, concurrency=1, events=False)
    # without -E a worker still sends worker-* events (heartbeats), so it is known ...
    wait_for(lambda: p.value("celery_workers", **ANALYSES) == 1, 60, what="the worker known from heartbeats")
    app = producer(redis_url)

    def counted() -> bool:
        # ... and its task events start once enable_events reached it
        if p.count("lensing.analyse_lens", "succeeded") >= 1:
            return True
        app.send_task("lensing.analyse_lens", args=[1, 0.1], queue="analyses")
        return False

    wait_for(counted, 60, interval=2, what="task events from a worker started without -E")
    assert p.count("lensing.analyse_lens", "started") >= 1


def test_global_keyprefix_is_honoured(redis_url, celery_worker, probe) -> None:  # type: ignore[no-untyped-def]
    p = probe(redis_url, "--broker-transport-option", "global_keyprefix=lens:")
    celery_worker(redis_url, concurrency=1, events=True, transport_options='{"global_keyprefix": "lens:"}')
    wait_for(lambda: p.value("celery_workers", **ANALYSES) == 1, 60, what="the worker, asked through the prefix")
    app = producer(redis_url)
    app.conf.broker_transport_options = {"global_keyprefix": "lens:"}
    app.send_task("lensing.analyse_lens", args=[1, 0.1], queue="analyses")
    wait_for(lambda: p.count("lensing.analyse_lens", "succeeded") == 1, 60, what="the task counted")


def test_queue_of_tasks_without_task_sent_on_a_worker_of_two_queues(redis_url, celery_worker, probe) -> None:  # type: ignore[no-untyped-def]
    p = probe(redis_url)
    celery_worker(redis_url, queues=["analyses", "cpu"], concurrency=3, events=True)
    wait_for(lambda: p.value("celery_workers", queue="cpu") == 1, 60, what="the worker of two queues")
    app = Celery("quiet-producer", broker=redis_url, set_as_current=False)  # sends no task-sent events
    app.send_task("lensing.analyse_lens", args=[1, 20], queue="analyses")
    app.send_task("lensing.analyse_lens", args=[2, 20], queue="analyses")
    app.send_task("lensing.analyse_lens", args=[3, 20], queue="cpu")
    # placed by the routing keys `inspect active` reports, off the event path
    wait_for(
        lambda: p.value("active_analyses", **ANALYSES) == 2 and p.value("active_analyses", queue="cpu") == 1,
        30,
        what="running tasks attributed to their queues",
    )


def test_tasks_already_running_when_the_exporter_starts_on_a_worker_without_events(  # type: ignore[no-untyped-def]
    redis_url, celery_worker, probe
) -> None:
    """The demo's setup: a worker without -E on two queues, prefetch 2, late acks, busy with tasks sent
    before the exporter started (no task-sent, no task-started it could see)."""
    celery_worker(redis_url, queues=["analyses", "cpu"], concurrency=2, prefetch=2, events=False)
    app = Celery("quiet-producer", broker=redis_url, set_as_current=False)
    app.send_task("lensing.analyse_lens", args=[1, 60], queue="analyses")
    app.send_task("lensing.analyse_lens", args=[2, 60], queue="cpu")
    for i in range(4):  # a backlog behind them, prefetched
        app.send_task("lensing.analyse_lens", args=[3 + i, 60], queue="analyses")

    def running() -> bool:
        answer = app.control.inspect(timeout=1).active() or {}
        return sum(len(tasks) for tasks in answer.values()) == 2

    wait_for(running, 60, interval=0.5, what="both pool processes busy")
    p = probe(redis_url, "--enable-events-interval", "60")
    wait_for(lambda: p.value("celery_worker_slots_busy", queue="cpu") == 2, 30, what="busy slots from heartbeats")
    # within a few seconds of the heartbeats, not when the tasks end (a minute later)
    wait_for(
        lambda: (p.value("active_analyses", **ANALYSES), p.value("active_analyses", queue="cpu")) == (1, 1),
        15,
        what="the running tasks counted, each on its queue",
    )
    assert p.value("active_analyses", queue="unknown") is None


def test_redis_restart_reconnects_and_counting_resumes(redis_server, celery_worker, probe) -> None:  # type: ignore[no-untyped-def]
    server = redis_server()
    p = probe(server.url)
    celery_worker(server.url, concurrency=1, events=True)
    app = producer(server.url)
    app.send_task("lensing.analyse_lens", args=[1, 0.1], queue="analyses")
    wait_for(lambda: p.count("lensing.analyse_lens", "succeeded") == 1, 60, what="first task counted")
    assert p.value("celery_events_reconnects_total") == 0

    server.stop()
    wait_for(lambda: p.value("celery_events_up") == 0, 30, what="celery_events_up 0")
    assert p.value("celery_workers", **ANALYSES) is None  # absent, not a made-up 0
    server.start()
    wait_for(lambda: p.value("celery_events_up") == 1, 30, what="re-subscribed")
    assert p.value("celery_events_reconnects_total") == 1

    def resumed() -> bool:
        if p.count("lensing.analyse_lens", "succeeded") >= 2:
            return True
        # the worker reconnects on its own schedule: keep sending until one is counted
        producer(server.url).send_task("lensing.analyse_lens", args=[2, 0.1], queue="analyses")
        return False

    wait_for(resumed, 90, interval=3, what="counting resumed after the restart")


def _close_connection_on_port(vhost: str, port: int) -> None:
    rows = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "--no-table-headers", "pid", "vhost", "peer_port"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    pids = [r.split("\t")[0] for r in rows if r.split("\t")[1:] == [vhost, str(port)]]
    assert pids, f"no connection of ours in {vhost}: {rows}"
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test: stream dropped"], check=True)


def test_rabbitmq_events_and_dropped_connection(amqp_url, celery_worker, probe) -> None:  # type: ignore[no-untyped-def]
    p = probe(amqp_url, "--analysis-task", "lensing.analyse_*")
    celery_worker(amqp_url, concurrency=2, events=True)
    app = producer(amqp_url)
    app.send_task("lensing.analyse_lens", args=[1, 3], queue="analyses")
    wait_for(lambda: p.value("active_analyses", **ANALYSES) == 1, 60, what="analysis running on RabbitMQ")
    wait_for(lambda: p.count("lensing.analyse_lens", "succeeded") == 1, 60, what="analysis counted")
    assert p.value("active_analyses", **ANALYSES) == 0

    stream = p.source.consumer.stream
    port = stream._conn.connection.sock.getsockname()[1]  # type: ignore[attr-defined]
    vhost = amqp_url.rsplit("/", 1)[1]
    _close_connection_on_port(vhost, port)
    wait_for(lambda: p.value("celery_events_reconnects_total") == 1, 30, what="re-subscribed to celeryev")
    app.send_task("lensing.analyse_lens", args=[2, 0.1], queue="analyses")
    wait_for(lambda: p.count("lensing.analyse_lens", "succeeded") == 2, 60, what="counting resumed")


def test_exporter_serves_events_beside_queue_depth(redis_url, celery_worker) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    proc = subprocess.Popen(
        [
            str(REPO / ".venv/bin/lensing-metrics")
            if (REPO / ".venv/bin/lensing-metrics").exists()
            else "lensing-metrics",
            "exporter",
            "--broker-url",
            redis_url,
            "--listen",
            f"127.0.0.1:{port}",
            "--queue",
            "analyses",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        celery_worker(redis_url, concurrency=1, events=True)

        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    return str(response.read().decode())
            except OSError:
                return ""

        body = wait_for(lambda: (b := scrape()) and 'celery_workers{queue="analyses"} 1.0' in b and b, 60)
        assert "celery_events_up 1.0" in body
        assert 'celery_queue_length{queue="analyses"}' in body
    finally:
        proc.terminate()
        proc.wait(15)
