"""The adapter's broker provider with a fixed clock and a broker read set by hand: the staleness decision (an old
read is a 503, never its value), the grace of the backlog and workers needed while the running part is unknown,
404 for a queue the broker has no trace of, and readiness. The mutation check's fast tests for
adapter/providers/brokers.py (docs/testing.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapter.config import BrokerConfig, single_broker
from adapter.providers.brokers import BrokerBinding, BrokerMetrics
from adapter.providers.interface import ExternalValue, MetricNotFound, Unavailable
from adapter.selectors import parse_selector
from lensing_core.brokers import BrokerSnapshot, QueueDepth
from lensing_core.poller import BrokerPoller, PollState
from lensing_sources.events.state import RunningSnapshot

NOW = 1_000.0


class Reader:
    transport = "redis"

    def read(self) -> BrokerSnapshot:
        raise AssertionError("not polled in these tests")

    def close(self) -> None:
        pass


class Running:
    """An event source's running() (and nothing else the provider asks for)."""

    def __init__(self, snapshot: RunningSnapshot) -> None:
        self.snapshot = snapshot
        self.calls = 0

    def running(self) -> RunningSnapshot:
        self.calls += 1
        return self.snapshot

    def running_version(self) -> int:
        return id(self.snapshot)


KNOWN = RunningSnapshot(
    None, {"analyses": frozenset({"r1"})}, {}, {}, {}, {}, {"analyses": 4, "cpu": 2}, {"analyses": 1}
)


def snapshot(read_at: float = NOW - 1.0, **queues: QueueDepth) -> BrokerSnapshot:
    queues = queues or {
        "analyses": QueueDepth(6, 2, unacked_ids=frozenset({"u1", "u2"})),
        "cpu": QueueDepth(0, 0, unacked_ids=frozenset()),
    }
    return BrokerSnapshot(queues=queues, read_at=read_at, duration=0.01)


def provider(
    read: BrokerSnapshot | None,
    running: RunningSnapshot | None = KNOWN,
    *,
    up: bool = True,
    config: BrokerConfig | None = None,
    clock: list[float] | None = None,
) -> tuple[BrokerMetrics, BrokerBinding]:
    poller = BrokerPoller(Reader(), 1.0)  # type: ignore[arg-type]
    poller._state = PollState(up, read, None if up else "connection refused", None if up else "connection", NOW)
    binding = BrokerBinding(config or single_broker("redis://x", [], []), poller)
    if running is not None:
        binding.events = Running(running)  # type: ignore[assignment]
    moment = clock or [NOW]
    return BrokerMetrics([binding], max_staleness=10.0, clock=lambda: moment[0]), binding


def ask(metrics: BrokerMetrics, metric: str, selector: str = "", namespace: str = "default") -> list[ExternalValue]:
    return asyncio.run(metrics.external_metric(namespace, metric, parse_selector(selector)))


def values(found: list[ExternalValue]) -> dict[str, Any]:
    return {v.labels["queue"]: v.value for v in found}


def test_lengths_backlogs_and_workers_needed_per_queue() -> None:
    metrics, _ = provider(snapshot())
    assert values(ask(metrics, "celery_queue_length")) == {"analyses": 6, "cpu": 0}
    assert values(ask(metrics, "celery_queue_backlog")) == {"analyses": 9, "cpu": 0}  # 6 + |{u1, u2} | {r1}|
    assert values(ask(metrics, "celery_queue_workers_needed", "queue=analyses")) == {"analyses": 3}  # ceil(9 / 4)
    length = ask(metrics, "celery_queue_length", "queue=cpu")[0]
    assert (length.metric, length.timestamp) == ("celery_queue_length", NOW - 1.0)  # when the broker was read
    assert ask(metrics, "celery_queue_backlog", "queue=cpu")[0].timestamp == NOW  # when it was computed
    assert metrics.list_metrics() == ["celery_queue_backlog", "celery_queue_length", "celery_queue_workers_needed"]


def test_a_read_older_than_max_staleness_is_503_never_its_value() -> None:
    clock = [NOW]
    metrics, _ = provider(snapshot(read_at=NOW - 10.0), clock=clock)
    assert values(ask(metrics, "celery_queue_length")) == {"analyses": 6, "cpu": 0}  # 10 s old: still served
    clock[0] += 0.01
    for metric in ("celery_queue_length", "celery_queue_backlog", "celery_queue_workers_needed"):
        with pytest.raises(Unavailable, match=r"10\.0s old \(--max-staleness 10s\)"):
            ask(metrics, metric)
    assert metrics.readiness() == (False, "broker default not read within 10s")


def test_no_read_yet_is_503_and_not_ready() -> None:
    metrics, _ = provider(None, up=False)
    with pytest.raises(Unavailable, match="has not been read yet \\(connection refused\\)"):
        ask(metrics, "celery_queue_length")
    assert metrics.readiness()[0] is False


def test_ready_while_every_broker_is_fresh() -> None:
    metrics, _ = provider(snapshot())
    assert metrics.readiness() == (True, "1 broker(s) fresh")


def test_an_unknown_queue_is_404_naming_the_known_ones_and_an_unknown_metric_too() -> None:
    metrics, _ = provider(snapshot())
    with pytest.raises(MetricNotFound, match=r"has no queue never \(known queues: analyses, cpu\)"):
        ask(metrics, "celery_queue_length", "queue in (cpu,never)")
    assert ask(metrics, "celery_queue_length", "queue!=cpu,queue!=analyses") == []  # matching none: empty
    with pytest.raises(MetricNotFound, match="could not find the metric celery_queue_depth"):
        ask(metrics, "celery_queue_depth")
    many = {f"q{i:02d}": QueueDepth(0, 0, unacked_ids=frozenset()) for i in range(25)}
    crowded, _ = provider(snapshot(**many))
    with pytest.raises(MetricNotFound, match=r"q19 and 5 more\)"):
        ask(crowded, "celery_queue_length", "queue=nope")


def test_a_namespace_no_broker_serves_is_404() -> None:
    config = BrokerConfig(name="platform", url="redis://x", namespaces=("lensing",))
    metrics, _ = provider(snapshot(), config=config)
    assert values(ask(metrics, "celery_queue_length", namespace="lensing"))
    with pytest.raises(MetricNotFound, match='no broker serves namespace "default"'):
        ask(metrics, "celery_queue_length")


def test_while_the_running_part_is_unknown_the_last_known_value_is_served_for_the_grace_then_503() -> None:
    clock = [NOW]
    metrics, binding = provider(snapshot(), clock=clock)
    binding.remember(binding.poller.state)  # the poll listener: the values computed with a known running part
    remembered = {key: value for key, (value, _at) in binding.last_known.items()}
    assert remembered == {
        ("celery_queue_backlog", "analyses"): 9,
        ("celery_queue_backlog", "cpu"): 0,
        ("celery_queue_workers_needed", "analyses"): 3,
        ("celery_queue_workers_needed", "cpu"): 0,
    }
    at = next(iter(binding.last_known.values()))[1]
    clock[0] = at + 10.0
    binding.events = Running(RunningSnapshot("events_down", {}, {}, {}))  # type: ignore[assignment]
    clock_read = snapshot(read_at=clock[0] - 1.0)
    binding.poller._state = PollState(True, clock_read, None, None, clock[0])
    served = ask(metrics, "celery_queue_backlog", "queue=analyses")
    assert [(v.value, v.timestamp) for v in served] == [(9, at)]  # the last known value, with its own time
    assert values(ask(metrics, "celery_queue_length")) == {"analyses": 6, "cpu": 0}  # unaffected
    clock[0] += 0.01
    with pytest.raises(Unavailable, match=r"the backlog of queue 'analyses' .* the Celery event stream is down"):
        ask(metrics, "celery_queue_backlog", "queue=analyses")
    with pytest.raises(Unavailable, match="the workers needed of queue 'analyses'"):
        ask(metrics, "celery_queue_workers_needed", "queue=analyses")


def test_a_queue_gone_from_the_broker_is_forgotten() -> None:
    _metrics, binding = provider(snapshot())
    binding.remember(binding.poller.state)
    gone = PollState(True, snapshot(cpu=QueueDepth(0, 0, unacked_ids=frozenset())), None, None, NOW)
    binding.remember(gone)
    assert {queue for _metric, queue in binding.last_known} == {"cpu"}


def test_without_an_event_stream_the_backlog_is_503_with_the_reason() -> None:
    metrics, binding = provider(snapshot(), running=None)
    binding.remember(binding.poller.state)
    assert binding.last_known == {}
    with pytest.raises(Unavailable, match="no Celery event stream is consumed"):
        ask(metrics, "celery_queue_backlog")
    assert values(ask(metrics, "celery_queue_length")) == {"analyses": 6, "cpu": 0}


def test_answer_versions_cache_lengths_only() -> None:
    read = snapshot()
    metrics, _ = provider(read)
    assert metrics.answer_version("default", "celery_queue_length") is read
    assert metrics.answer_version("default", "celery_queue_backlog") is None
    assert metrics.answer_version("default", "celery_queue_workers_needed") is None


class Connected:
    def __init__(self, connected: bool) -> None:
        self.connected = connected


def test_the_health_families_per_broker() -> None:
    from adapter.providers.brokers import BrokerHealthCollector

    metrics, binding = provider(snapshot(read_at=NOW - 2.5))
    binding.events = Running(KNOWN)  # type: ignore[assignment]
    binding.events.state = Connected(False)  # type: ignore[attr-defined]
    samples = {
        (s.name, s.labels["broker"]): s.value for f in BrokerHealthCollector(metrics).collect() for s in f.samples
    }
    assert samples == {
        ("lensing_adapter_broker_up", "default"): 1.0,
        ("lensing_adapter_broker_read_age_seconds", "default"): 2.5,
        ("lensing_adapter_events_up", "default"): 0.0,
    }
    down, _ = provider(None, running=None, up=False)
    samples = {(s.name, s.labels["broker"]): s.value for f in BrokerHealthCollector(down).collect() for s in f.samples}
    assert samples == {("lensing_adapter_broker_up", "default"): 0.0}  # no read: no age; no event stream: no events_up
    assert [f.name for f in BrokerHealthCollector(down).describe()] == [
        "lensing_adapter_broker_up",
        "lensing_adapter_broker_read_age_seconds",
        "lensing_adapter_events_up",
    ]


def test_open_bindings_gives_each_broker_a_poller_and_an_event_source_where_it_has_events() -> None:
    import argparse

    from adapter.providers.brokers import open_bindings
    from lensing_core.brokers import BrokerConfigError
    from lensing_sources.events.state import StateConfig

    defaults = StateConfig()
    args = argparse.Namespace(
        events=True,
        worker_timeout=defaults.worker_timeout,
        task_expiry=defaults.task_expiry,
        max_tracked_tasks=defaults.max_tracked_tasks,
        enable_events_interval=60.0,
    )
    brokers = [
        BrokerConfig("platform", "redis://127.0.0.1:1/0", queues=("analyses",)),
        BrokerConfig("batch", "sqs://", transport_options=("region=eu-west-1",), queues=("q",), namespaces=("batch",)),
    ]
    bindings = open_bindings(brokers, 0.5, args)
    assert [(b.config.name, b.poller.interval, b.events is not None) for b in bindings] == [
        ("platform", 0.5, True),
        ("batch", 0.5, False),  # SQS carries no events
    ]
    assert bindings[0].poller.name == "broker platform"
    args.events = False
    assert [b.events for b in open_bindings(brokers[:1], 0.5, args)] == [None]
    assert [b.events for b in open_bindings(brokers[:1], 0.5, None)] == [None]
    with pytest.raises(BrokerConfigError, match=r"^broker 'bad' \(url, transportOptions\): "):
        open_bindings([BrokerConfig("bad", "redis://h/notadb")], 0.5, args)


def test_404s_name_the_metric_and_say_exactly_what_is_missing() -> None:
    metrics, _ = provider(snapshot())
    with pytest.raises(MetricNotFound) as unknown_metric:
        ask(metrics, "celery_queue_depth")
    assert unknown_metric.value.metric == "celery_queue_depth"
    with pytest.raises(MetricNotFound) as unknown_queue:
        ask(metrics, "celery_queue_backlog", "queue in (zz,aa)")
    assert unknown_queue.value.metric == "celery_queue_backlog"
    assert str(unknown_queue.value) == "broker 'default' has no queue aa, zz (known queues: analyses, cpu)"
    nothing, _ = provider(BrokerSnapshot(queues={}, read_at=NOW, duration=0.0))
    with pytest.raises(MetricNotFound, match=r"\(known queues: none\)$"):
        ask(nothing, "celery_queue_length", "queue=a")
    twenty = {f"q{i:02d}": QueueDepth(0, 0, unacked_ids=frozenset()) for i in range(20)}
    exactly, _ = provider(snapshot(**twenty))
    with pytest.raises(MetricNotFound) as named:
        ask(exactly, "celery_queue_length", "queue=nope")
    assert str(named.value).endswith("q18, q19)")  # twenty named, no "and N more"
    config = BrokerConfig(name="platform", url="redis://x", namespaces=("lensing",))
    elsewhere, _ = provider(snapshot(), config=config)
    with pytest.raises(MetricNotFound) as namespace:
        ask(elsewhere, "celery_queue_backlog", namespace="kube-system")
    assert namespace.value.metric == "celery_queue_backlog"


def test_503_messages_say_why() -> None:
    clock = [NOW]
    never, _ = provider(None)
    with pytest.raises(Unavailable) as starting:
        ask(never, "celery_queue_length")
    assert str(starting.value) == "broker 'default' has not been read yet (starting)"
    old, binding = provider(snapshot(read_at=NOW - 30.0), clock=clock)
    with pytest.raises(Unavailable) as stale:
        ask(old, "celery_queue_length")
    assert str(stale.value) == (
        "the last good read of broker 'default' is 30.0s old (--max-staleness 10s): no read since"
    )
    binding.poller._state = PollState(False, snapshot(read_at=NOW - 30.0), "timeout", "timeout", NOW)
    with pytest.raises(Unavailable, match=r"\(--max-staleness 10s\): timeout$"):
        ask(old, "celery_queue_length")
    odd, odd_binding = provider(snapshot())
    odd_binding.events = Running(RunningSnapshot("some_new_reason", {}, {}, {}))  # type: ignore[assignment]
    with pytest.raises(Unavailable, match=r"is not known: some_new_reason \(for more than"):
        ask(odd, "celery_queue_backlog", "queue=cpu")


def test_values_carry_their_metric_and_queue_label_in_the_grace_too() -> None:
    clock = [NOW]
    metrics, binding = provider(snapshot(), clock=clock)
    fresh = ask(metrics, "celery_queue_workers_needed", "queue=analyses")
    assert [(v.metric, dict(v.labels)) for v in fresh] == [("celery_queue_workers_needed", {"queue": "analyses"})]
    binding.remember(binding.poller.state)
    binding.events = Running(RunningSnapshot("warming_up", {}, {}, {}))  # type: ignore[assignment]
    late = ask(metrics, "celery_queue_workers_needed", "queue=analyses")
    assert [(v.metric, dict(v.labels), v.value) for v in late] == [
        ("celery_queue_workers_needed", {"queue": "analyses"}, 3)
    ]


def test_readiness_at_the_staleness_boundary_and_with_two_brokers() -> None:
    metrics, _ = provider(snapshot(read_at=NOW - 10.0))
    assert metrics.readiness()[0] is True  # exactly --max-staleness old: still fresh
    first, _ = provider(None)
    second, _ = provider(None, config=BrokerConfig(name="batch", url="redis://y"))
    both = BrokerMetrics([*first.bindings, *second.bindings], max_staleness=10.0, clock=lambda: NOW)
    assert both.readiness() == (False, "broker default not read within 10s; broker batch not read within 10s")


def test_the_work_is_computed_once_per_broker_read_and_event_state() -> None:
    metrics, binding = provider(snapshot())
    running = binding.events
    assert isinstance(running, Running)
    for _ in range(3):
        assert values(ask(metrics, "celery_queue_backlog")) == {"analyses": 9, "cpu": 0}
        assert values(ask(metrics, "celery_queue_workers_needed")) == {"analyses": 3, "cpu": 0}
    assert running.calls == 1
    running.snapshot = RunningSnapshot(None, {}, {}, {}, {}, {}, {"analyses": 4, "cpu": 2}, {})  # the state moved
    assert values(ask(metrics, "celery_queue_backlog")) == {"analyses": 8, "cpu": 0}
    binding.poller._state = PollState(True, snapshot(), None, None, NOW)  # a new read
    ask(metrics, "celery_queue_backlog")
    assert running.calls == 3
