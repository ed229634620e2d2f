"""External metrics from the brokers: Celery queue depth.

- ``celery_queue_length{queue}``: messages waiting, every priority summed (as the exporter defines it);
- ``celery_queue_backlog{queue}``: waiting plus every task delivered to a worker and not finished, each
  once (lensing_sources.backlog, the exporter's function): the running part comes from the broker's
  Celery event stream, which the adapter consumes itself;
- ``celery_queue_workers_needed{queue}``: the workers the queue needs now (the same function), from the
  backlog, the pool size each worker reports and the workers busy with its tasks.

Values come from each broker's :class:`BrokerPoller` (the exporter's readers, polled in the background)
and event source: a request never costs a broker round trip. A last good read older than
``max_staleness`` seconds is not served: the answer is 503 and the HPA keeps its replicas. A backlog
whose running part has not been known for ``max_staleness`` seconds is 503 too, never the waiting part
alone; within that grace the last backlog computed with a known running part is served. The workers
needed follow the same rule.

A queue the broker has no trace of answers 404, naming the queues it has: a typo in an HPA selector
shows in the HPA's conditions instead of reading as 0 and scaling the workers to their minimum.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from adapter.config import ANY_NAMESPACE, BrokerConfig
from adapter.providers.interface import ExternalValue, MetricNotFound, Unavailable
from adapter.selectors import Selector
from lensing_core import catalog
from lensing_core.brokers import BrokerConfigError, BrokerSnapshot, open_reader
from lensing_core.poller import BrokerPoller, PollState
from lensing_sources import events
from lensing_sources.backlog import QueueWork, queue_work

QUEUE_LABEL = "queue"
BACKLOG = "celery_queue_backlog"
LENGTH = "celery_queue_length"
WORKERS_NEEDED = "celery_queue_workers_needed"
METRICS = (BACKLOG, LENGTH, WORKERS_NEEDED)
#: at most this many known queues are named in a 404 (the message stays short)
NAMED_IN_404 = 20
_WHY = {
    "events_off": "no Celery event stream is consumed for this broker (--no-events, or SQS, which has none)",
    "events_down": "the Celery event stream is down",
    "warming_up": "the Celery event stream has just (re)connected and is settling",
    "unplaced": "a running task's queue is not known yet",
    "ack_mode_unknown": "whether a running task's message was acknowledged is not known yet (inspect active)",
    "inflight_unknown": "the broker does not report in-flight messages (RabbitMQ: add management_url)",
    "pool_size_unknown": "a worker of the queue has not reported its pool size yet (inspect stats)",
    "no_workers": "no live worker consumes the queue, so no pool size is known",
}


@dataclass(slots=True)
class BrokerBinding:
    config: BrokerConfig
    poller: BrokerPoller
    events: events.EventSource | None = None
    #: (metric, queue) -> (value, when) of the last computation with a known running part (the poll thread's)
    last_known: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    #: (broker read, event-state version, its work): reused while neither moved (a backlog request would
    #: otherwise rebuild the running snapshot, milliseconds with thousands of tasks held)
    _last_work: tuple[BrokerSnapshot, Hashable, dict[str, QueueWork]] | None = None

    def work(self, snapshot: BrokerSnapshot) -> dict[str, QueueWork]:
        if self.events is None:
            return queue_work(snapshot, None)
        version = self.events.running_version()
        last = self._last_work
        if last is not None and last[0] is snapshot and last[1] == version:
            return last[2]
        work = queue_work(snapshot, self.events.running())
        self._last_work = (snapshot, version, work)
        return work

    def remember(self, state: PollState) -> None:
        """Poll listener: keep each queue's last backlog and workers needed computed with a known running part."""
        if state.snapshot is None:
            return
        now = time.time()
        for queue, item in self.work(state.snapshot).items():
            for metric, (value, _why) in _work_values(item).items():
                if value is not None:
                    self.last_known[(metric, queue)] = (value, now)
        for key in [k for k in self.last_known if k[1] not in state.snapshot.queues]:
            del self.last_known[key]


def _work_values(item: QueueWork) -> dict[str, tuple[int | None, str | None]]:
    """The metrics that follow the event stream: (value or None, why not known)."""
    return {
        BACKLOG: (item.backlog, item.unknown),
        WORKERS_NEEDED: (item.workers_needed, item.needed_unknown),
    }


def open_bindings(
    brokers: Sequence[BrokerConfig], poll_interval: float, event_args: argparse.Namespace | None = None
) -> list[BrokerBinding]:
    """A reader, a poller and (where the broker has events and ``event_args.events``) an event source per
    broker. Raises BrokerConfigError for an unusable broker URL or option."""
    bindings = []
    for broker in brokers:
        try:
            reader = open_reader(broker.url, broker.transport_options, broker.queues)
        except BrokerConfigError as exc:
            raise BrokerConfigError(f"broker {broker.name!r} (url, transportOptions): {exc}") from None
        poller = BrokerPoller(reader, poll_interval, name=f"broker {broker.name}", url_for_logs=broker.url)
        source = None
        if event_args is not None and event_args.events and events.has_events(broker.url):
            source = events.source_for(broker.url, broker.transport_options, event_args)
        binding = BrokerBinding(broker, poller, source)
        poller.add_listener(binding.remember)
        bindings.append(binding)
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

    def answer_version(self, namespace: str, metric: str) -> BrokerSnapshot | None:
        """The broker's last good read: lengths computed from the same read are the same. A backlog
        follows the event stream between reads: not cached."""
        if metric != LENGTH:
            return None
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
        if metric not in METRICS:
            raise MetricNotFound(f"the server could not find the metric {metric}", metric)
        binding, snapshot = self._fresh_read(namespace, metric)
        # the readers list every queue they know, empty ones included (Redis: from the bindings)
        unknown = sorted(set(selector.named_values(QUEUE_LABEL)) - set(snapshot.queues))
        if unknown:
            known = sorted(snapshot.queues)
            named = ", ".join(known[:NAMED_IN_404]) + (
                f" and {len(known) - NAMED_IN_404} more" if len(known) > NAMED_IN_404 else ""
            )
            raise MetricNotFound(
                f"broker {binding.config.name!r} has no queue {', '.join(unknown)} (known queues: {named or 'none'})",
                metric,
            )
        matching = [q for q in sorted(snapshot.queues) if selector.matches({QUEUE_LABEL: q})]
        if metric == LENGTH:
            return [
                ExternalValue(metric, {QUEUE_LABEL: q}, snapshot.read_at, snapshot.queues[q].waiting) for q in matching
            ]
        work = binding.work(snapshot)
        now = self.clock()
        values = []
        what = "backlog" if metric == BACKLOG else "workers needed"
        for queue in matching:
            value, why = _work_values(work[queue])[metric]
            if value is not None:
                values.append(ExternalValue(metric, {QUEUE_LABEL: queue}, now, value))
                continue
            last = binding.last_known.get((metric, queue))
            if last is None or now - last[1] > self.max_staleness:
                raise Unavailable(
                    f"the {what} of queue {queue!r} on broker {binding.config.name!r} is not known: "
                    f"{_WHY.get(why or '', why)} (for more than --max-staleness "
                    f"{self.max_staleness:g}s); celery_queue_length is served"
                )
            values.append(ExternalValue(metric, {QUEUE_LABEL: queue}, last[1], last[0]))
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
            if binding.events is not None:
                binding.events.start()
            binding.poller.start()

    def stop(self) -> None:
        for binding in self.bindings:
            binding.poller.stop()
            if binding.events is not None:
                binding.events.stop()


class BrokerHealthCollector(Collector):
    def __init__(self, provider: BrokerMetrics) -> None:
        self.provider = provider

    def describe(self) -> Iterator[Metric]:
        for name in HEALTH_FAMILIES:
            yield catalog.gauge(name)

    def collect(self) -> Iterator[Metric]:
        up, age, events_up = (catalog.gauge(name) for name in HEALTH_FAMILIES)
        now = self.provider.clock()
        for binding in self.provider.bindings:
            state = binding.poller.state
            up.add_metric([binding.config.name], 1.0 if state.up else 0.0)
            if state.snapshot is not None:
                age.add_metric([binding.config.name], max(now - state.snapshot.read_at, 0.0))
            if binding.events is not None:
                events_up.add_metric([binding.config.name], 1.0 if binding.events.state.connected else 0.0)
        yield up
        yield age
        yield events_up


HEALTH_FAMILIES = ("lensing_adapter_broker_up", "lensing_adapter_broker_read_age_seconds", "lensing_adapter_events_up")
