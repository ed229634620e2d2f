"""External metrics from the brokers: Celery queue depth.

- ``celery_queue_length{queue}``: messages waiting, every priority summed (as the exporter defines it);
- ``celery_queue_backlog{queue}``: waiting plus in flight, the work the workers actually have.

Values come from each broker's :class:`BrokerPoller` (the exporter's readers, polled in the background):
a request never costs a broker round trip. A last good read older than ``max_staleness`` seconds is not
served: the answer is 503 and the HPA keeps its replicas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapter.config import ANY_NAMESPACE, BrokerConfig
from adapter.providers.interface import ExternalValue, MetricNotFound, Unavailable
from adapter.selectors import Selector
from lensing_core.brokers import BrokerConfigError, BrokerSnapshot, QueueDepth, open_reader
from lensing_core.poller import BrokerPoller

QUEUE_LABEL = "queue"

#: metric name -> the value of one queue (None: this broker cannot tell)
METRICS: dict[str, Callable[[QueueDepth], int | None]] = {
    "celery_queue_backlog": lambda depth: depth.backlog,
    "celery_queue_length": lambda depth: depth.waiting,
}
EMPTY_QUEUE = QueueDepth(waiting=0, inflight=0)


@dataclass(slots=True)
class BrokerBinding:
    config: BrokerConfig
    poller: BrokerPoller


def open_bindings(brokers: Sequence[BrokerConfig], poll_interval: float) -> list[BrokerBinding]:
    """A reader and a poller per broker. Raises BrokerConfigError for an unusable broker URL or option."""
    bindings = []
    for broker in brokers:
        try:
            reader = open_reader(broker.url, broker.transport_options, broker.queues)
        except BrokerConfigError as exc:
            raise BrokerConfigError(f"broker {broker.name!r} (url, transportOptions): {exc}") from None
        poller = BrokerPoller(reader, poll_interval, name=f"broker {broker.name}", url_for_logs=broker.url)
        bindings.append(BrokerBinding(broker, poller))
    return bindings


class BrokerMetrics:
    source = "the brokers"

    def __init__(
        self, bindings: Sequence[BrokerBinding], max_staleness: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.bindings = list(bindings)
        self.max_staleness = max_staleness
        self.clock = clock
        self._by_namespace: dict[str, BrokerBinding] = {}
        for binding in self.bindings:
            for namespace in binding.config.namespaces:
                self._by_namespace[namespace] = binding

    def binding_for(self, namespace: str) -> BrokerBinding | None:
        return self._by_namespace.get(namespace) or self._by_namespace.get(ANY_NAMESPACE)

    def list_metrics(self) -> list[str]:
        return sorted(METRICS)

    def answer_version(self, namespace: str, metric: str) -> BrokerSnapshot:
        """The broker's last good read: answers computed from the same read are the same."""
        return self._fresh_read(namespace, metric)[1]

    def _fresh_read(self, namespace: str, metric: str) -> tuple[BrokerBinding, BrokerSnapshot]:
        binding = self.binding_for(namespace)
        if binding is None:
            raise MetricNotFound(f'no broker serves namespace "{namespace}": its metrics are not available', metric)
        state = binding.poller.state
        snapshot = state.snapshot
        if snapshot is None:
            raise Unavailable(
                f"broker {binding.config.name!r} has not been read yet ({state.last_error or 'starting'})"
            )
        age = self.clock() - snapshot.read_at
        if age > self.max_staleness:
            raise Unavailable(
                f"the last good read of broker {binding.config.name!r} is {age:.1f}s old "
                f"(--max-staleness {self.max_staleness:g}s): {state.last_error or 'no read since'}"
            )
        return binding, snapshot

    async def external_metric(self, namespace: str, metric: str, selector: Selector) -> list[ExternalValue]:
        value_of = METRICS.get(metric)
        if value_of is None:
            raise MetricNotFound(f"the server could not find the metric {metric}", metric)
        binding, snapshot = self._fresh_read(namespace, metric)
        queues = dict(snapshot.queues)
        for named in selector.named_values(QUEUE_LABEL):
            queues.setdefault(named, EMPTY_QUEUE)  # an empty Redis list has no key: the queue is 0, not missing
        values = []
        for queue in sorted(queues):
            labels = {QUEUE_LABEL: queue}
            if not selector.matches(labels):
                continue
            value = value_of(queues[queue])
            if value is None:
                raise Unavailable(
                    f"broker {binding.config.name!r} does not report in-flight messages, which {metric} counts "
                    "(RabbitMQ: add the transport option management_url); celery_queue_length is served"
                )
            values.append(ExternalValue(metric, labels, snapshot.read_at, value))
        return values

    # -- lifecycle ---------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        now, problems = self.clock(), []
        for binding in self.bindings:
            snapshot = binding.poller.state.snapshot
            if snapshot is None or now - snapshot.read_at > self.max_staleness:
                problems.append(f"broker {binding.config.name} not read within {self.max_staleness:g}s")
        return (not problems, "; ".join(problems) or f"{len(self.bindings)} broker(s) fresh")

    def collectors(self) -> Iterable[Collector]:
        return [BrokerHealthCollector(self)]

    def start(self) -> None:
        for binding in self.bindings:
            binding.poller.start()

    def stop(self) -> None:
        for binding in self.bindings:
            binding.poller.stop()


class BrokerHealthCollector(Collector):
    def __init__(self, provider: BrokerMetrics) -> None:
        self.provider = provider

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "lensing_adapter_broker_up", "1 when the adapter's last read of the broker succeeded.", labels=["broker"]
        )
        age = GaugeMetricFamily(
            "lensing_adapter_broker_read_age_seconds",
            "Seconds since the adapter's last good read of the broker (above --max-staleness: answers are 503).",
            labels=["broker"],
        )
        now = self.provider.clock()
        for binding in self.provider.bindings:
            state = binding.poller.state
            up.add_metric([binding.config.name], 1.0 if state.up else 0.0)
            if state.snapshot is not None:
                age.add_metric([binding.config.name], max(now - state.snapshot.read_at, 0.0))
        yield up
        yield age
