"""Each exporter collector describes exactly the catalogued families it yields, so a registry refuses a duplicate."""

from __future__ import annotations

import pytest
from fakeredis import FakeRedis
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.app import Exporter
from exporter.collectors.events import EventCollector
from exporter.collectors.gpu import GpuCollector
from exporter.collectors.queues import QueueCollector
from exporter.sources import BrokerSource
from lensing_core.brokers.redis import KOMBU_SEP, RedisQueueReader
from lensing_core.poller import BrokerPoller
from lensing_sources.events.state import EventState, StateConfig
from lensing_sources.gpu.sampler import GpuSampler
from tests.support.fake_nvml import FakeNvml, tesla_t4


def poller() -> BrokerPoller:
    client = FakeRedis()
    client.sadd("_kombu.binding.analyses", KOMBU_SEP.join(["analyses", "", "analyses"]))
    client.lpush("analyses", "m")
    reader = RedisQueueReader(client)
    reader._scripting = False
    polled = BrokerPoller(reader, 1.0, url_for_logs="redis://fake")
    polled.poll_once()
    return polled


def collectors() -> list[Collector]:
    state = EventState(StateConfig(warmup=0.0))
    state.on_connected()
    sampler = GpuSampler(FakeNvml([tesla_t4(0)]))
    sampler.sample_once()
    return [QueueCollector(poller()), EventCollector(state), GpuCollector(sampler)]


@pytest.mark.parametrize("collector", collectors(), ids=lambda c: type(c).__name__)
def test_describe_names_what_collect_yields(collector: Collector) -> None:
    described = {(f.name, f.type, f.documentation) for f in collector.describe()}  # type: ignore[attr-defined]
    collected = {(f.name, f.type, f.documentation) for f in collector.collect()}
    assert collected <= described
    assert len(described) == len(list(collector.describe()))  # type: ignore[attr-defined]


def test_a_second_collector_of_the_same_names_is_refused() -> None:
    source = BrokerSource(poller(), ready_within=5.0)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Exporter([source, source])
    registry = CollectorRegistry()
    registry.register(collectors()[1])
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(collectors()[1])
