"""Every background loop is watched: a crash is counted, its source reads as down, and the loop restarts."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

from fakeredis import FakeRedis

from exporter.collectors.queues import QueueCollector
from exporter.sources import BrokerSource
from lensing_core.background import BackgroundThread, RestartCollector, restart_counts, supervise
from lensing_core.brokers.redis import KOMBU_SEP, RedisQueueReader
from lensing_core.poller import BrokerPoller
from lensing_sources.events.consumer import EventConsumer
from lensing_sources.events.state import EventState, StateConfig
from lensing_sources.gpu.sampler import GpuSampler
from tests.support.fake_nvml import FakeNvml, tesla_t4


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_failing_loop_is_counted_reported_and_restarted_with_backoff() -> None:
    runs: list[float] = []
    crashes: list[BaseException | None] = []

    def target() -> None:
        runs.append(time.monotonic())
        if len(runs) <= 3:
            raise OverflowError("timeout value is too large")
        worker.stopping.wait(10)

    worker = BackgroundThread(target, "test-loop", on_crash=crashes.append, min_backoff=0.05, max_backoff=1.0)
    before = restart_counts().get("test-loop", 0)
    worker.start()
    wait_for(lambda: len(runs) == 4)
    worker.stop()
    assert [type(c) for c in crashes] == [OverflowError] * 3
    assert restart_counts()["test-loop"] - before == 3
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # doubling
    family = next(iter(RestartCollector().collect()))
    counted = {s.labels["loop"]: s.value for s in family.samples if s.name == "lensing_background_restarts_total"}
    assert counted["test-loop"] == restart_counts()["test-loop"]


def test_a_loop_that_returns_without_a_stop_is_restarted() -> None:
    runs = []
    worker = BackgroundThread(lambda: runs.append(1), "test-returns", min_backoff=0.01, max_backoff=0.02)
    worker.start()
    wait_for(lambda: len(runs) >= 3)
    worker.stop()


def test_an_async_loop_is_restarted() -> None:
    runs = []

    async def loop() -> None:
        runs.append(1)
        raise RuntimeError("boom")

    async def main() -> None:
        task = asyncio.create_task(supervise(loop, "test-async", min_backoff=0.01, max_backoff=0.02))
        while len(runs) < 3:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert restart_counts()["test-async"] >= 2


def _poller() -> BrokerPoller:
    client = FakeRedis()
    client.sadd("_kombu.binding.analyses", KOMBU_SEP.join(["analyses", "", "analyses"]))
    client.lpush("analyses", "m")
    reader = RedisQueueReader(client)
    reader._scripting = False
    return BrokerPoller(reader, 0.05, url_for_logs="redis://fake")


def test_while_the_poll_loop_is_down_the_broker_reads_as_down() -> None:
    poller = _poller()
    collector = QueueCollector(poller)
    source = BrokerSource(poller, ready_within=10.0)
    crashed = threading.Event()
    release = threading.Event()
    real = poller.next_delay

    def next_delay() -> float:
        if not crashed.is_set():
            crashed.set()
            raise OverflowError("timeout value is too large")  # what --poll-interval inf did
        return real()

    poller.next_delay = next_delay  # type: ignore[method-assign]
    poller._worker.supervision.min_backoff = 0.5
    original = poller._crashed

    def crashed_hook(exc: BaseException | None) -> None:
        original(exc)
        release.set()

    poller._worker.supervision.on_crash = crashed_hook
    poller.start()
    try:
        assert release.wait(5)
        names = {f.name: f for f in collector.collect()}
        assert names["celery_broker_up"].samples[0].value == 0.0
        assert "celery_queue_length" not in names
        assert source.readiness()[0] is False
        wait_for(lambda: poller.state.up)  # restarted, reading again
        assert source.readiness()[0] is True
    finally:
        poller.stop()


def test_while_the_event_consumer_is_down_events_read_as_down() -> None:
    state = EventState(StateConfig(warmup=0.0))
    state.on_connected()
    consumer = EventConsumer(SimpleNamespace(description="fake stream"), state)  # type: ignore[arg-type]
    consumer._crashed(RuntimeError("boom"))
    assert state.connected is False


def test_while_the_gpu_sampler_is_down_nvml_reads_as_down() -> None:
    sampler = GpuSampler(FakeNvml([tesla_t4(0)]), interval=0.05)
    calls = []
    real = sampler.sample_once

    def sample_once():  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bug")
        if len(calls) > 2:
            sampler.stop_waiting.wait(10)
        return real()

    sampler.stop_waiting = threading.Event()  # type: ignore[attr-defined]
    sampler.sample_once = sample_once  # type: ignore[method-assign]
    sampler._worker.supervision.min_backoff = 5.0
    sampler.start()
    try:
        wait_for(lambda: len(calls) == 2 and sampler._worker.supervision.down)
        assert sampler.snapshot.up is False
        assert sampler.errors["internal"] == 1
    finally:
        sampler.stop_waiting.set()  # type: ignore[attr-defined]
        sampler.stop()
