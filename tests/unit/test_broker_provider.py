"""The adapter's broker provider on a stand-in poller: which read it serves, when it answers 503 instead
(no read yet, a read older than --max-staleness, in-flight unknown), and what its health metrics say."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from adapter.config import BrokerConfig
from adapter.providers.brokers import BrokerBinding, BrokerHealthCollector, BrokerMetrics, open_bindings
from adapter.providers.interface import ExternalValue, MetricNotFound, Unavailable
from adapter.selectors import EVERYTHING, parse_selector
from lensing_core.brokers import BrokerReadError, BrokerSnapshot, QueueDepth
from lensing_core.poller import BrokerPoller, PollState

NOW = 1_000_000.0


class NeverRead:
    transport = "redis"

    def read(self) -> BrokerSnapshot:
        raise BrokerReadError("connection", "not polled in these tests")

    def close(self) -> None:
        pass


def binding(
    name: str = "main",
    queues: Mapping[str, QueueDepth] | None = None,
    *,
    age: float | None = 1.0,
    up: bool = True,
    last_error: str | None = None,
    namespaces: tuple[str, ...] = ("*",),
) -> BrokerBinding:
    """A broker whose last good read finished ``age`` seconds before NOW (None: never read)."""
    poller = BrokerPoller(NeverRead(), 1.0)  # type: ignore[arg-type]
    snapshot = None if age is None else BrokerSnapshot(dict(queues or {}), NOW - age, 0.01)
    poller._state = PollState(up, snapshot, last_error, None, NOW)
    return BrokerBinding(BrokerConfig(name, "redis://127.0.0.1:6379/0", namespaces=namespaces), poller)


def provider(*bindings: BrokerBinding, max_staleness: float = 10.0) -> BrokerMetrics:
    return BrokerMetrics(list(bindings), max_staleness=max_staleness, clock=lambda: NOW)


def values(metrics: BrokerMetrics, metric: str, selector: str = "", namespace: str = "default") -> list[ExternalValue]:
    return asyncio.run(metrics.external_metric(namespace, metric, parse_selector(selector) if selector else EVERYTHING))


DEPTHS = {
    "analyses": QueueDepth(waiting=7, inflight=3),
    "cpu": QueueDepth(waiting=0, inflight=2),
    "gpu": QueueDepth(waiting=5, inflight=0),
}


def test_backlog_is_waiting_plus_inflight_and_unknown_inflight_is_none() -> None:
    assert QueueDepth(waiting=7, inflight=3).backlog == 10
    assert QueueDepth(waiting=0, inflight=0).backlog == 0
    assert QueueDepth(waiting=7).backlog is None
    assert QueueDepth(waiting=7).inflight is None and QueueDepth(waiting=7).delayed is None


def test_values_of_every_queue_in_name_order_from_the_last_read() -> None:
    metrics = provider(binding(queues=DEPTHS, age=2.0))
    length = values(metrics, "celery_queue_length")
    assert [(v.labels, v.value) for v in length] == [
        ({"queue": "analyses"}, 7),
        ({"queue": "cpu"}, 0),
        ({"queue": "gpu"}, 5),
    ]
    assert {v.metric for v in length} == {"celery_queue_length"}
    assert {v.timestamp for v in length} == {NOW - 2.0}
    backlog = values(metrics, "celery_queue_backlog")
    assert [(v.labels["queue"], v.value, v.metric) for v in backlog] == [
        ("analyses", 10, "celery_queue_backlog"),
        ("cpu", 2, "celery_queue_backlog"),
        ("gpu", 5, "celery_queue_backlog"),
    ]
    assert metrics.list_metrics() == ["celery_queue_backlog", "celery_queue_length"]
    assert metrics.answer_version("default", "celery_queue_length") is metrics.bindings[0].poller.state.snapshot


def test_selector_picks_queues_and_a_named_queue_without_a_key_is_zero() -> None:
    metrics = provider(binding(queues=DEPTHS))
    assert [(v.labels["queue"], v.value) for v in values(metrics, "celery_queue_length", "queue=gpu")] == [("gpu", 5)]
    picked = values(metrics, "celery_queue_backlog", "queue in (cpu,idle)")
    assert [(v.labels["queue"], v.value) for v in picked] == [("cpu", 2), ("idle", 0)]
    assert [v.labels["queue"] for v in values(metrics, "celery_queue_length", "queue!=cpu")] == ["analyses", "gpu"]
    # a queue only excluded by the selector is not invented
    assert values(metrics, "celery_queue_length", "queue notin (analyses,cpu,gpu)") == []


def test_age_at_the_limit_is_served_and_just_over_it_is_503() -> None:
    assert len(values(provider(binding(queues=DEPTHS, age=10.0)), "celery_queue_length")) == 3
    stale = provider(binding(queues=DEPTHS, age=10.25, up=False, last_error="redis connection failed: refused"))
    with pytest.raises(Unavailable) as exc:
        values(stale, "celery_queue_length")
    assert str(exc.value) == (
        "the last good read of broker 'main' is 10.2s old (--max-staleness 10s): redis connection failed: refused"
    )
    with pytest.raises(Unavailable, match=r"is 10\.2s old \(--max-staleness 10s\): no read since$"):
        values(provider(binding(queues=DEPTHS, age=10.25)), "celery_queue_backlog")
    with pytest.raises(Unavailable, match=r"--max-staleness 2\.5s"):
        values(provider(binding(queues=DEPTHS, age=3.0), max_staleness=2.5), "celery_queue_length")


def test_no_read_yet_is_503_never_zero() -> None:
    with pytest.raises(Unavailable) as exc:
        values(provider(binding(age=None)), "celery_queue_length")
    assert str(exc.value) == "broker 'main' has not been read yet (starting)"
    with pytest.raises(Unavailable) as exc:
        values(provider(binding(age=None, last_error="redis authentication failed")), "celery_queue_length")
    assert str(exc.value) == "broker 'main' has not been read yet (redis authentication failed)"


def test_unknown_inflight_is_503_for_the_backlog_only() -> None:
    metrics = provider(binding(queues={"a": QueueDepth(waiting=4), "b": QueueDepth(waiting=1, inflight=1)}))
    assert [v.value for v in values(metrics, "celery_queue_length")] == [4, 1]
    with pytest.raises(Unavailable) as exc:
        values(metrics, "celery_queue_backlog")
    assert str(exc.value) == (
        "broker 'main' does not report in-flight messages, which celery_queue_backlog counts "
        "(RabbitMQ: add the transport option management_url); celery_queue_length is served"
    )
    # the queue that can tell is still served when the selector leaves the other out
    assert [v.value for v in values(metrics, "celery_queue_backlog", "queue=b")] == [2]


def test_namespace_picks_its_broker_and_falls_back_to_any() -> None:
    team = binding("team", {"q": QueueDepth(waiting=1, inflight=0)}, namespaces=("team-a", "team-b"))
    rest = binding("rest", {"q": QueueDepth(waiting=9, inflight=0)})
    metrics = provider(team, rest)
    assert [v.value for v in values(metrics, "celery_queue_length", namespace="team-b")] == [1]
    assert [v.value for v in values(metrics, "celery_queue_length", namespace="other")] == [9]
    only_team = provider(team)
    with pytest.raises(MetricNotFound) as exc:
        values(only_team, "celery_queue_length", namespace="other")
    assert str(exc.value) == 'no broker serves namespace "other": its metrics are not available'
    assert exc.value.metric == "celery_queue_length"
    with pytest.raises(MetricNotFound) as exc:
        values(metrics, "celery_queue_depth")
    assert str(exc.value) == "the server could not find the metric celery_queue_depth"
    assert exc.value.metric == "celery_queue_depth"


def test_readiness_needs_every_broker_fresh() -> None:
    assert provider(binding("a", age=10.0), binding("b", age=0.0)).readiness() == (True, "2 broker(s) fresh")
    ready, why = provider(binding("a", age=10.5), binding("b", age=None), binding("c"), max_staleness=10).readiness()
    assert ready is False
    assert why == "broker a not read within 10s; broker b not read within 10s"


def test_health_metrics_say_up_and_age() -> None:
    metrics = provider(
        binding("fresh", age=2.0), binding("down", age=30.0, up=False), binding("never", age=None, up=False)
    )
    metrics.bindings.append(binding("ahead", age=-3.0))  # a read stamped after this clock: age 0, not negative
    up, age = BrokerHealthCollector(metrics).collect()
    assert {s.labels["broker"]: s.value for s in up.samples} == {"fresh": 1.0, "down": 0.0, "never": 0.0, "ahead": 1.0}
    assert {s.labels["broker"]: s.value for s in age.samples} == {"fresh": 2.0, "down": 30.0, "ahead": 0.0}
    assert (up.name, age.name) == ("lensing_adapter_broker_up", "lensing_adapter_broker_read_age_seconds")
    assert [type(c) for c in metrics.collectors()] == [BrokerHealthCollector]


def test_open_bindings_one_poller_per_broker_named_after_it() -> None:
    brokers = [
        BrokerConfig("a", "redis://:secret@127.0.0.1:6399/0", queues=("q1", "q2")),
        BrokerConfig("b", "redis://127.0.0.1:6399/1"),
    ]
    bindings = open_bindings(brokers, 2.5)
    try:
        assert [b.config for b in bindings] == brokers
        assert [b.poller.name for b in bindings] == ["broker a", "broker b"]
        assert {b.poller.interval for b in bindings} == {2.5}
        assert bindings[0].poller.reader.configured_queues == ("q1", "q2")
        assert "secret" not in bindings[0].poller.url_for_logs and "127.0.0.1:6399" in bindings[0].poller.url_for_logs
    finally:
        for b in bindings:
            b.poller.reader.close()


def test_start_and_stop_reach_every_poller() -> None:
    calls: list[str] = []

    class Poller:
        def __init__(self, name: str) -> None:
            self.name = name

        def start(self) -> None:
            calls.append("start " + self.name)

        def stop(self) -> None:
            calls.append("stop " + self.name)

    config = BrokerConfig("x", "redis://127.0.0.1:6379/0")
    metrics = BrokerMetrics([BrokerBinding(config, Poller("a")), BrokerBinding(config, Poller("b"))])  # type: ignore[arg-type]
    metrics.start()
    metrics.stop()
    assert calls == ["start a", "start b", "stop a", "stop b"]
