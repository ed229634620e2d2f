"""The exporter's work families (running, backlog, workers needed) in /metrics: rendered again only when the broker
read or the event state moved, and prerendered with the queue families when no event stream is consumed."""

from __future__ import annotations

from exporter.collectors.queues import QueueCollector
from lensing_core.poller import BrokerPoller
from lensing_sources.events.state import EventState, RunningSnapshot, StateConfig
from tests.unit.test_collectors_describe import poller
from tests.unit.test_events_state import FakeClock, heartbeat, run_task


class CountingRunning:
    """An event source's running() and running_version() over a real EventState."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.state = EventState(StateConfig(warmup=0.0), clock=self.clock)
        self.state.on_connected()
        self.state.apply(heartbeat())
        self.state.set_worker_info("w1@pod-a", ["analyses"], 4)
        self.calls = 0

    def running(self) -> RunningSnapshot:
        self.calls += 1
        return self.state.running_snapshot()

    def version(self) -> tuple[int, int]:
        return self.state.version, int(self.clock())


def scrape(collector: QueueCollector) -> str:
    return collector.exposition(False).decode()


def work_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "running" in line or "backlog" in line or "needed" in line]


def test_work_families_are_reused_until_the_read_or_the_events_move() -> None:
    source, polled = CountingRunning(), poller()
    collector = QueueCollector(polled, source.running, source.version)
    first = scrape(collector)
    assert 'celery_queue_backlog{queue="analyses"} 1.0' in first
    assert 'celery_queue_workers_needed{queue="analyses"} 1.0' in first
    assert work_lines(scrape(collector)) == work_lines(first) and source.calls == 1  # nothing moved: reused
    run_task(source.state, "t1", host="w1@pod-a")  # an event: computed again, and right
    second = scrape(collector)
    assert source.calls == 2 and 'celery_queue_running{queue="analyses"} 1.0' in second
    source.clock.now += 1.0  # the clock decides worker timeouts: a new second, computed again
    scrape(collector)
    assert source.calls == 3
    polled.poll_once()  # a new broker read
    scrape(collector)
    assert source.calls == 4


def test_without_events_the_work_families_are_prerendered_with_the_queues() -> None:
    polled: BrokerPoller = poller()
    collector = QueueCollector(polled)
    polled.poll_once()  # the listener renders the read once
    text = scrape(collector)
    assert 'celery_queue_running_up{queue="analyses",reason="events_off"} 0.0' in text
    assert 'celery_queue_workers_needed_up{queue="analyses",reason="events_off"} 0.0' in text
    assert text.count("# TYPE celery_queue_backlog gauge") == 1
    assert collector._rendered[False] in text.encode()  # the read's prerendered text, reused as it is
