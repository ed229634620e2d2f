"""What the event stream has told us: bounded task and worker state, counters and histograms.

Not ``celery.events.State``: that keeps every field of every event, a task list per worker and
worker records forever. Here a task is a few slots in an LRU/TTL map, a worker lives only while it
sends events, and every label value is capped.

The state is not thread-safe by itself: the consumer applies events and the collector takes
snapshots, both holding :attr:`EventState.lock`.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lensing_core.brokers.base import DEFAULT_EXCLUDED_QUEUES, is_excluded
from lensing_sources.events.labels import OTHER, UNKNOWN, LabelCap, TaskMatcher

log = logging.getLogger(__name__)

TASK_STATES = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected", "cancelled")
#: states after which the task no longer runs (a retried task runs again under the same id later)
_ENDS = frozenset({"succeeded", "failed", "retried", "revoked", "rejected", "cancelled"})
#: queues that are never work queues: remote control, event and per-worker direct queues
EXCLUDED_QUEUES = (*DEFAULT_EXCLUDED_QUEUES, "*.dq", "*.dq2")
MAX_QUEUE_NAMES = 100
MAX_WORKERS = 10_000
MAX_RUNNING_PER_WORKER = 10_000
MAX_LEARNED_QUEUES = 16


@dataclass(frozen=True, slots=True)
class StateConfig:
    worker_timeout: float = 10.0
    #: a worker that went offline (warm shutdown: its pod terminating) with tasks still running keeps them
    #: counted until their end events come, at most this long (the pods' terminationGracePeriodSeconds)
    drain_timeout: float = 1800.0
    task_expiry: float = 3600.0
    max_tracked_tasks: int = 100_000
    max_task_names: int = 200
    series_expiry: float = 900.0
    analysis_tasks: tuple[str, ...] = ()
    runtime_buckets: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
    queue_wait_buckets: tuple[float, ...] = (0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
    worker_labels: bool = False
    #: after a (re)connection the worker gauges wait this long for heartbeats before they are shown
    warmup: float = 3.0
    #: learn per (worker, task name) whether a running task's message was already acknowledged
    #: (``inspect active``): the backlog needs it where the broker gives counts, not task ids (RabbitMQ)
    learn_acks: bool = False


@dataclass(frozen=True, slots=True)
class ActiveTask:
    """A task a worker says it runs (``inspect active``): its routing key names its queue."""

    uuid: str
    name: str | None
    routing_key: str | None
    started: float | None  # the worker's wall clock, as event timestamps
    acknowledged: bool | None = None  # its message was acknowledged (early ack, or late ack done)


@dataclass(frozen=True, slots=True)
class RunningSnapshot:
    """The tasks running now, per queue, as the backlog needs them (copied out under the lock).

    ``reason`` is None when the running part is known for every queue but those in ``unknown``;
    otherwise it says why it is not known for any queue (``events_down``, ``warming_up``, ``unplaced``).
    """

    reason: str | None
    by_queue: Mapping[str, frozenset[str]]  # queue -> ids of the tasks running on live workers
    acked: Mapping[str, int]  # queue -> running tasks whose message was acknowledged (learn_acks only)
    unknown: Mapping[str, str]  # queue -> why its running part is not known (ack_mode_unknown, unplaced)
    #: queue -> ids of the tasks received by live workers and not started (prefetched): only for a union
    #: with the broker's unacked ids, never counted on their own
    reserved: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: wall-clock time (``time.time()``) from which a worker held each running or reserved task: the
    #: worker's own stamp on its task-received (else task-started) event, or when that event reached us if
    #: earlier (a worker clock running ahead). A task a worker took after a broker read began was still
    #: waiting in that read, and must not be counted a second time
    held_from: Mapping[str, float] = field(default_factory=dict)
    #: queue -> the smallest pool size among the live workers consuming it; None while one of them has not
    #: reported it (``inspect stats``); absent when no live worker consumes the queue
    worker_slots: Mapping[str, int | None] = field(default_factory=dict)
    #: queue -> live workers running at least one task of the queue (draining workers left out: their pods
    #: are already out of the Deployment's count)
    busy_workers: Mapping[str, int] = field(default_factory=dict)


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


class TaskRecord:
    __slots__ = ("held_from", "hostname", "name", "queue", "received_at", "sent_at", "started_at", "state", "touched")

    def __init__(self, touched: float) -> None:
        self.name: str | None = None
        self.queue: str | None = None
        self.state = "pending"
        self.sent_at: float | None = None
        self.received_at: float | None = None
        self.started_at: float | None = None
        self.hostname: str | None = None
        self.touched = touched
        self.held_from: float | None = None  # state clock: when the stream first saw a worker hold it


class WorkerRecord:
    __slots__ = (
        "acked",
        "active",
        "control_queues",
        "draining_since",
        "excess",
        "freq",
        "hb_clock",
        "hb_ts",
        "hostname",
        "last_seen",
        "learned_queues",
        "missing",
        "pid",
        "reserved",
        "resync",
        "running",
        "short",
        "slots",
        "unplaced",
    )

    def __init__(self, hostname: str, pid: Any, now: float) -> None:
        self.hostname = hostname
        self.pid = pid
        self.last_seen = now
        self.freq = 2.0
        self.active: int | None = None
        self.hb_ts: float | None = None
        self.hb_clock: int | None = None
        self.excess = 0  # running tasks above the heartbeat's count, at the previous heartbeat
        self.missing = 0  # running tasks below the heartbeat's count, at the previous heartbeat
        #: the heartbeats say it runs more tasks than the stream showed: ask the worker (``inspect active``)
        self.short = False
        #: it received a task whose queue no event named (no task-sent) while it consumes several queues
        self.unplaced = False
        self.resync = False  # reconcile at the next heartbeat at once (after a reconnection)
        self.control_queues: frozenset[str] | None = None  # from `inspect active_queues`
        self.learned_queues: set[str] = set()  # from the queue of tasks it ran
        self.slots: int | None = None  # pool size from `inspect stats`
        #: when it went offline with tasks still running (warm shutdown): it takes no new work, and its
        #: running tasks stay counted until they end or ``drain_timeout`` passes
        self.draining_since: float | None = None
        self.running: dict[str, TaskRecord] = {}
        #: received (prefetched) and not started nor ended: covers the instant between an early ack and
        #: task-started, when a task is in neither the broker's unacked set nor ``running``
        self.reserved: dict[str, TaskRecord] = {}
        #: task name -> whether its messages are acknowledged by the time it runs (``inspect active``)
        self.acked: dict[str, bool] = {}

    def queues(self) -> Iterable[str]:
        if self.control_queues:
            return self.control_queues
        return self.learned_queues or (UNKNOWN,)


Labels = tuple[str, ...]


@dataclass(slots=True)
class EventsSnapshot:
    """Everything the collector exports, copied out under the lock."""

    up: bool
    gauges: bool  # False while the stream is down or warming up: worker gauges are then absent
    received: int
    dropped: dict[str, int]
    lost: dict[str, int]
    reconnects: int
    tasks_total: dict[tuple[str, str], int]
    runtime: dict[str, tuple[list[tuple[str, float]], float]]
    queue_wait: dict[str, tuple[list[tuple[str, float]], float]]
    active: dict[Labels, int] = field(default_factory=dict)
    workers: dict[Labels, int] = field(default_factory=dict)
    slots: dict[Labels, int] = field(default_factory=dict)
    busy: dict[Labels, int] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class EventState:
    def __init__(self, config: StateConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.Lock()
        self.task_names = LabelCap(config.max_task_names)
        self.queue_names = LabelCap(MAX_QUEUE_NAMES)
        self.is_analysis = TaskMatcher(config.analysis_tasks)
        self.tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        self.workers: dict[str, WorkerRecord] = {}
        self.queues_seen: dict[str, float] = {}  # queue label -> when a worker or task last used it
        self.received = 0
        self.dropped: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.reconnects = 0
        self.tasks_total: Counter[tuple[str, str]] = Counter()
        self.runtime: dict[str, Histogram] = {}
        self.queue_wait: dict[str, Histogram] = {}
        self.connected = False
        self.connected_at = float("-inf")
        #: moves on with every change (an event, a remote-control answer, a sweep, a (re)connection): what was
        #: computed from the state at one version is still right at that version, up to the clock
        self.version = 0
        #: hostnames seen for the first time since the last drain: the consumer asks them for their queues
        self.new_workers: list[str] = []
        #: live workers whose running tasks the stream did not fully show: more running than it showed
        #: (task events off or lost, tasks started before we subscribed), or of unknown name or queue
        self.unresolved_workers: list[str] = []
        self._handlers: dict[str, Callable[[Mapping[str, Any], float], None]] = {
            "task-sent": self._task_sent,
            "task-received": self._task_received,
            "task-started": self._task_started,
            "task-succeeded": self._task_end,
            "task-failed": self._task_end,
            "task-retried": self._task_end,
            "task-revoked": self._task_end,
            "task-rejected": self._task_end,
            "task-cancelled": self._task_end,
            "worker-online": self._worker_online,
            "worker-heartbeat": self._worker_heartbeat,
            "worker-offline": self._worker_offline,
        }

    # -- connection --------------------------------------------------------------------------
    def on_connected(self) -> None:
        self.version += 1
        self.connected = True
        self.connected_at = self.clock()
        for worker in self.workers.values():
            worker.resync = True  # events were missed: trust the next heartbeat's count of running tasks

    def on_disconnected(self) -> None:
        self.version += 1
        self.connected = False

    # -- events ------------------------------------------------------------------------------
    def apply(self, event: Any) -> None:
        """Apply one decoded event (a dict as Celery's EventDispatcher sends it)."""
        self.received += 1
        self.version += 1
        if not isinstance(event, dict):
            self.dropped["malformed"] += 1
            return
        handler = self._handlers.get(event.get("type"))  # type: ignore[arg-type]
        if handler is None:
            self.dropped["unsupported"] += 1
            return
        try:
            handler(event, self.clock())
        except (KeyError, TypeError, ValueError):
            self.dropped["malformed"] += 1

    def _record(self, uuid: str, now: float) -> TaskRecord:
        record = self.tasks.get(uuid)
        if record is None:
            record = TaskRecord(now)
            self.tasks[uuid] = record
            if len(self.tasks) > self.config.max_tracked_tasks:
                self.tasks.popitem(last=False)
        else:
            record.touched = now
            self.tasks.move_to_end(uuid)
        return record

    def _find(self, uuid: str, hostname: str | None, now: float) -> TaskRecord:
        """The record of a task that may have left the LRU map while it ran."""
        if uuid not in self.tasks and hostname is not None:
            worker = self.workers.get(hostname)
            if worker is not None and uuid in worker.running:
                record = worker.running[uuid]
                record.touched = now
                self.tasks[uuid] = record
                return record
        return self._record(uuid, now)

    def _count(self, name: str | None, state: str) -> str:
        label = self.task_names(name) if name else UNKNOWN
        self.tasks_total[(label, state)] += 1
        return label

    def _queue_label(self, queue: Any) -> str | None:
        if not isinstance(queue, str) or not queue or is_excluded(queue, EXCLUDED_QUEUES):
            return None
        return self.queue_names(queue)

    def _task_sent(self, event: Mapping[str, Any], now: float) -> None:
        record = self._record(event["uuid"], now)
        name = event.get("name")
        if isinstance(name, str):
            record.name = name
        queue = self._queue_label(event.get("queue"))
        if queue is not None:
            record.queue = queue
            self.queues_seen[queue] = now
        record.sent_at = _number(event.get("timestamp"))
        if record.state == "pending":
            record.state = "sent"
        self._count(record.name, "sent")

    def _worker_of(self, event: Mapping[str, Any], now: float) -> WorkerRecord | None:
        """The worker that sent ``event``, created on its first event; None past the worker cap."""
        hostname = event["hostname"]
        worker = self.workers.get(hostname)
        if worker is None:
            if len(self.workers) >= MAX_WORKERS:
                self.dropped["worker_limit"] += 1
                return None
            worker = self.workers[hostname] = WorkerRecord(hostname, event.get("pid"), now)
            self.new_workers.append(hostname)
        worker.last_seen = now
        return worker

    def _task_received(self, event: Mapping[str, Any], now: float) -> None:
        record = self._record(event["uuid"], now)
        name = event.get("name")
        if isinstance(name, str):
            record.name = name
        record.hostname = event["hostname"]
        record.received_at = _number(event.get("timestamp"))
        record.state = "received"
        if record.held_from is None:
            record.held_from = now
        worker = self._worker_of(event, now)
        if worker is not None:
            if len(worker.reserved) < MAX_RUNNING_PER_WORKER:
                worker.reserved[event["uuid"]] = record
            if record.queue is not None and len(worker.learned_queues) < MAX_LEARNED_QUEUES:
                worker.learned_queues.add(record.queue)
            elif record.queue is None and self._task_queue(record, worker) == UNKNOWN:
                worker.unplaced = True  # asked while the task waits in its prefetch, placed before it starts
        self._count(record.name, "received")

    def _task_started(self, event: Mapping[str, Any], now: float) -> None:
        uuid = event["uuid"]
        record = self._find(uuid, event.get("hostname"), now)
        started = _number(event.get("timestamp"))
        label = self._count(record.name, "started")
        waited_since = record.sent_at if record.sent_at is not None else record.received_at
        if started is not None and waited_since is not None:
            self._observe(self.queue_wait, self.config.queue_wait_buckets, label, max(started - waited_since, 0.0))
        record.started_at = started
        record.state = "started"
        if record.held_from is None:
            record.held_from = now
        record.hostname = event["hostname"]
        worker = self._worker_of(event, now)
        if worker is not None:
            worker.reserved.pop(uuid, None)
        if worker is not None and len(worker.running) < MAX_RUNNING_PER_WORKER:
            worker.running[uuid] = record
            if record.queue is not None:
                self.queues_seen[record.queue] = now

    def _task_end(self, event: Mapping[str, Any], now: float) -> None:
        uuid = event["uuid"]
        hostname = event.get("hostname")
        record = self._find(uuid, hostname, now)
        state = event["type"][5:]
        if state == "succeeded" and record.state == "received":
            self.lost["task_started_missing"] += 1  # received, then succeeded: the started event never came
        label = self._count(record.name, state)
        # not _worker_of: an end event flushed after worker-offline must not bring the worker back
        worker = self.workers.get(hostname) if hostname is not None else None
        if worker is not None:
            worker.last_seen = now
            worker.running.pop(uuid, None)
            worker.reserved.pop(uuid, None)
            if worker.draining_since is not None and not worker.running:
                del self.workers[worker.hostname]  # its warm shutdown is done
        if state in ("succeeded", "failed"):
            runtime = _number(event.get("runtime"))
            ended = _number(event.get("timestamp"))
            if runtime is None and record.started_at is not None and ended is not None:
                runtime = ended - record.started_at
            if runtime is not None:
                self._observe(self.runtime, self.config.runtime_buckets, label, max(runtime, 0.0))
        record.state = state

    @staticmethod
    def _observe(histograms: dict[str, Histogram], bounds: Sequence[float], label: str, value: float) -> None:
        histogram = histograms.get(label)
        if histogram is None:
            histogram = histograms[label] = Histogram(bounds)
        histogram.observe(value)

    def _new_incarnation(self, worker: WorkerRecord, pid: Any) -> None:
        """The hostname came back as another process: what the old one ran is gone."""
        if worker.running:
            log.info("worker %s restarted: %d running task(s) dropped", worker.hostname, len(worker.running))
        worker.running.clear()
        worker.reserved.clear()
        worker.pid = pid
        worker.hb_ts = worker.hb_clock = None
        worker.excess = 0
        worker.missing = 0
        worker.short = False
        worker.control_queues = None
        worker.slots = None
        worker.draining_since = None
        worker.acked.clear()
        self.new_workers.append(worker.hostname)

    def _worker_online(self, event: Mapping[str, Any], now: float) -> None:
        known = event["hostname"] in self.workers
        worker = self._worker_of(event, now)
        if worker is not None and known:
            self._new_incarnation(worker, event.get("pid"))
        if worker is not None:
            self._heartbeat_fields(worker, event)

    def _worker_heartbeat(self, event: Mapping[str, Any], now: float) -> None:
        worker = self._worker_of(event, now)
        if worker is None:
            return
        if event.get("pid") != worker.pid:
            self._new_incarnation(worker, event.get("pid"))
        self._heartbeat_fields(worker, event)

    def _heartbeat_fields(self, worker: WorkerRecord, event: Mapping[str, Any]) -> None:
        active = event.get("active")
        if not isinstance(active, int):
            return  # a heartbeat asked for by remote control: no counts, and its freq is not the timer's
        freq = _number(event.get("freq")) or worker.freq
        ts = _number(event.get("timestamp"))
        clock = event.get("clock")
        clock = clock if isinstance(clock, int) else None
        if ts is not None and worker.hb_ts is not None and freq > 0:
            missed = round((ts - worker.hb_ts) / freq) - 1
            if clock is not None and worker.hb_clock is not None:
                # every event a worker sends advances its Lamport clock: fewer ticks than missing
                # beats means the worker was busy, not that heartbeats were lost
                missed = min(missed, clock - worker.hb_clock - 1)
            if missed > 0:
                self.lost["heartbeat_gap"] += missed
        self._reconcile(worker, active)
        first_or_changed = worker.hb_ts is None or freq != worker.freq
        worker.freq, worker.active = freq, active
        worker.hb_ts, worker.hb_clock = ts, clock
        if first_or_changed and freq >= self.config.worker_timeout:  # once per worker, not per beat
            log.warning(
                "worker %s sends heartbeats every %.1fs, not less than --worker-timeout %.1fs: it will flap",
                worker.hostname,
                freq,
                self.config.worker_timeout,
            )

    def _reconcile(self, worker: WorkerRecord, active: int) -> None:
        """A heartbeat says how many tasks the worker runs. More recorded than that at two heartbeats
        running (or at the first after a reconnection) means their end events were lost: drop the oldest.
        Fewer at two heartbeats running (or at the first) means their start events never came: the
        worker is asked which tasks it runs (:meth:`set_active_tasks`)."""
        missing = active - len(worker.running)
        worker.short = missing > 0 and (worker.hb_ts is None or worker.resync or worker.missing > 0)
        worker.missing = max(missing, 0)
        excess = -missing
        if excess > 0 and (worker.resync or worker.excess > 0):
            limit = excess if worker.resync else min(excess, worker.excess)
            before = worker.hb_ts if not worker.resync and worker.hb_ts is not None else float("inf")
            stale = sorted(
                (r.started_at or 0.0, uuid) for uuid, r in worker.running.items() if (r.started_at or 0.0) < before
            )[:limit]
            for _started, uuid in stale:
                del worker.running[uuid]
            self.lost["task_end_missing"] += len(stale)
            excess -= len(stale)
        worker.excess = max(excess, 0)
        worker.resync = False

    def _worker_offline(self, event: Mapping[str, Any], now: float) -> None:
        # Celery sends worker-offline when its warm shutdown begins, then waits for the running tasks and
        # sends their end events: until then they are still running (its pod is terminating, not gone)
        worker = self.workers.get(event["hostname"])
        if worker is None:
            return
        if not worker.running:
            del self.workers[event["hostname"]]
            return
        worker.draining_since = now
        worker.reserved.clear()  # prefetched, not started: they go back to the queue
        log.info(
            "worker %s is shutting down with %d running task(s): counted until they end",
            worker.hostname,
            len(worker.running),
        )

    # -- remote control answers ----------------------------------------------------------------
    def set_worker_info(self, hostname: str, queues: Iterable[str] | None, slots: int | None) -> None:
        self.version += 1
        worker = self.workers.get(hostname)
        if worker is None:
            return
        if queues is not None:
            labels = {label for q in queues if (label := self._queue_label(q)) is not None}
            worker.control_queues = frozenset(labels) or None
        if slots is not None:
            worker.slots = slots

    def set_active_tasks(self, hostname: str, tasks: Iterable[ActiveTask], reserved: Iterable[ActiveTask] = ()) -> None:
        """What the worker says it runs (``inspect active``): names and queues of the tasks the stream
        showed without them, and the tasks it did not show at all (started before we subscribed, or
        while the worker's task events were off or lost). Tasks absent from the answer are left to the
        heartbeat reconciliation: the answer may predate their task-started event. ``reserved`` (its
        prefetched tasks, ``inspect reserved``) only places tasks not started yet."""
        self.version += 1
        worker = self.workers.get(hostname)
        if worker is None:
            return
        now = self.clock()
        for task in reserved:
            record = self.tasks.get(task.uuid)
            if record is None or record.queue is None:
                record = self._record(task.uuid, now)
                record.name = record.name or task.name
                record.queue = self._queue_label(task.routing_key)
        worker.unplaced = False
        for task in tasks:
            record = worker.running.get(task.uuid)
            if record is None:
                known = self.tasks.get(task.uuid)
                if known is not None and known.state in _ENDS:
                    continue  # its end event came after the worker answered
                if len(worker.running) >= MAX_RUNNING_PER_WORKER:
                    break
                record = self._record(task.uuid, now)
                record.state = "started"
                record.hostname = hostname
                if record.started_at is None:
                    record.started_at = task.started
                worker.running[task.uuid] = record
            if record.name is None and task.name is not None:
                record.name = task.name
            if (
                task.acknowledged is not None
                and record.name is not None
                and (record.name in worker.acked or len(worker.acked) < self.config.max_task_names)
            ):
                worker.acked[record.name] = task.acknowledged
            if record.queue is None and task.routing_key is not None:
                record.queue = self._queue_label(task.routing_key)
                if record.queue is not None:
                    self.queues_seen[record.queue] = now
        worker.short = False  # asked and answered: ask again only if the next two heartbeats disagree

    def drain_new_workers(self) -> list[str]:
        new, self.new_workers = self.new_workers, []
        return new

    # -- expiry --------------------------------------------------------------------------------
    def alive(self, worker: WorkerRecord, now: float) -> bool:
        if worker.draining_since is not None:  # it sends no heartbeats any more, only its tasks' ends
            return now - max(worker.draining_since, self.connected_at) <= self.config.drain_timeout
        # a worker's silence while we were not connected is ours, not its
        return now - max(worker.last_seen, self.connected_at) <= self.config.worker_timeout

    def sweep(self) -> None:
        """Forget expired tasks, workers past the timeout and queues unused for the series expiry."""
        self.version += 1
        now = self.clock()
        deadline = now - self.config.task_expiry
        while self.tasks:
            uuid, record = next(iter(self.tasks.items()))
            if record.touched >= deadline and len(self.tasks) <= self.config.max_tracked_tasks:
                break
            del self.tasks[uuid]
        if not self.connected:
            return  # no news is not bad news while we cannot hear
        self.unresolved_workers = []
        for hostname, worker in list(self.workers.items()):
            if self.alive(worker, now):
                if worker.draining_since is not None:
                    continue  # shutting down: it answers no remote control, and its queues are known
                if worker.reserved:  # a record that moved on (its started or end event went to another host)
                    worker.reserved = {u: r for u, r in worker.reserved.items() if r.state == "received"}
                for queue in worker.queues():
                    if queue != UNKNOWN:  # a worker not yet asked: no lasting zero series for it
                        self.queues_seen[queue] = now
                if (
                    worker.short
                    or worker.unplaced
                    or any(
                        r.name is None
                        or self._task_queue(r, worker) == UNKNOWN
                        or (self.config.learn_acks and r.name not in worker.acked)
                        for r in worker.running.values()
                    )
                ):
                    self.unresolved_workers.append(hostname)
                continue
            if worker.draining_since is not None:
                log.warning(
                    "worker %s shut down %.0fs ago and its %d running task(s) never ended (--worker-drain-timeout):"
                    " no longer counted",
                    hostname,
                    now - worker.draining_since,
                    len(worker.running),
                )
                self.lost["task_end_missing"] += len(worker.running)
            else:
                log.info(
                    "worker %s sent nothing for %.0fs: gone (%d running task(s) no longer counted)",
                    hostname,
                    now - worker.last_seen,
                    len(worker.running),
                )
            del self.workers[hostname]
        series_deadline = now - self.config.series_expiry
        for queue, seen in list(self.queues_seen.items()):
            if seen < series_deadline:
                del self.queues_seen[queue]

    # -- snapshot ------------------------------------------------------------------------------
    def _task_queue(self, record: TaskRecord, worker: WorkerRecord) -> str:
        if record.queue is not None:
            return record.queue
        # a worker of several queues: which one this task came from only its routing key says
        # (the queue other tasks of the same name were sent to says nothing of this one)
        queues = worker.control_queues or worker.learned_queues
        if len(queues) == 1:
            return next(iter(queues))
        return UNKNOWN

    def snapshot(self) -> EventsSnapshot:
        now = self.clock()
        snap = EventsSnapshot(
            up=self.connected,
            gauges=self.connected and now >= self.connected_at + self.config.warmup,
            received=self.received,
            dropped=dict(self.dropped),
            lost=dict(self.lost),
            reconnects=self.reconnects,
            tasks_total=dict(self.tasks_total),
            runtime={k: (h.cumulative(), h.sum) for k, h in self.runtime.items()},
            queue_wait={k: (h.cumulative(), h.sum) for k, h in self.queue_wait.items()},
        )
        if not snap.gauges:
            return snap
        by_worker = self.config.worker_labels
        if not by_worker:
            for queue in self.queues_seen:
                snap.active[(queue,)] = snap.workers[(queue,)] = snap.busy[(queue,)] = snap.slots[(queue,)] = 0
        unknown_slots: set[Labels] = set()
        key: Labels
        for worker in self.workers.values():
            if not self.alive(worker, now):
                continue
            # a worker shutting down takes no new work: out of the worker and slot gauges, its analyses still active
            for queue in worker.queues() if worker.draining_since is None else ():
                key = (queue, worker.hostname) if by_worker else (queue,)
                snap.workers[key] = snap.workers.get(key, 0) + 1
                snap.busy[key] = snap.busy.get(key, 0) + (worker.active or 0)
                if worker.slots is None:
                    unknown_slots.add(key)
                else:
                    snap.slots[key] = snap.slots.get(key, 0) + worker.slots
                snap.active.setdefault(key, 0)
            for record in worker.running.values():
                if self.is_analysis(record.name):
                    queue = self._task_queue(record, worker)
                    key = (queue, worker.hostname) if by_worker else (queue,)
                    snap.active[key] = snap.active.get(key, 0) + 1
        for key in unknown_slots:  # a sum over some of the workers would be a made-up number
            snap.slots.pop(key, None)
        return snap

    def running_by_worker(self) -> dict[str, int] | None:
        """Running tasks per live worker hostname (draining ones too: their tasks still run); None while the
        stream is down or settling: then no worker is known to be idle."""
        now = self.clock()
        if not self.connected or now < self.connected_at + self.config.warmup:
            return None
        return {w.hostname: len(w.running) for w in self.workers.values() if self.alive(w, now)}

    def running_snapshot(self) -> RunningSnapshot:
        """The running tasks per queue (task-started without an end, on a live worker, after the
        lost-event repair), for the backlog. A dead worker's tasks are not running any more."""
        now = self.clock()
        if not self.connected:
            return RunningSnapshot("events_down", {}, {}, {})
        if now < self.connected_at + self.config.warmup:
            return RunningSnapshot("warming_up", {}, {}, {})
        by_queue: dict[str, set[str]] = {}
        reserved: dict[str, set[str]] = {}
        acked: dict[str, int] = {}
        unknown: dict[str, str] = {}
        held_from: dict[str, float] = {}
        worker_slots: dict[str, int | None] = {}
        busy_workers: dict[str, int] = {}
        slots_unsure = False
        wall_offset = time.time() - now  # the state clock is monotonic; broker reads are stamped in wall time
        for worker in self.workers.values():
            if not self.alive(worker, now):
                continue
            if worker.draining_since is None:
                for queue in worker.queues():
                    if queue in (UNKNOWN, OTHER):
                        slots_unsure = True  # a worker of queues not known yet: no queue's minimum is sure
                    else:
                        worker_slots[queue] = _smallest(worker_slots.get(queue, NO_WORKER), worker.slots)
            for uuid, record in worker.reserved.items():
                queue = self._task_queue(record, worker)
                if queue not in (UNKNOWN, OTHER) and record.state == "received":
                    reserved.setdefault(queue, set()).add(uuid)
                    _stamp_held(held_from, uuid, record, wall_offset)
            busy_on: set[str] = set()  # the queues this worker runs a task of
            for uuid, record in worker.running.items():
                _stamp_held(held_from, uuid, record, wall_offset)
                queue = self._task_queue(record, worker)
                if queue in (UNKNOWN, OTHER):
                    # which queue it came from is not known yet: any of the worker's queues may miss it
                    queues = worker.control_queues or worker.learned_queues
                    if not queues:
                        return RunningSnapshot("unplaced", {}, {}, {})
                    for maybe in queues:
                        unknown[maybe] = "unplaced"
                    continue
                by_queue.setdefault(queue, set()).add(uuid)
                busy_on.add(queue)
                if self.config.learn_acks:
                    flag = worker.acked.get(record.name) if record.name is not None else None
                    if flag is None:
                        unknown.setdefault(queue, "ack_mode_unknown")
                    elif flag:
                        acked[queue] = acked.get(queue, 0) + 1
            if worker.draining_since is None:  # a draining worker's pod is out of the Deployment's count
                for queue in busy_on:
                    busy_workers[queue] = busy_workers.get(queue, 0) + 1
        return RunningSnapshot(
            None,
            {q: frozenset(ids) for q, ids in by_queue.items()},
            acked,
            unknown,
            {q: frozenset(ids) for q, ids in reserved.items()},
            held_from,
            dict.fromkeys(worker_slots) if slots_unsure else worker_slots,
            busy_workers,
        )


#: a queue that no live worker consumes yet, while the smallest pool size is being found
NO_WORKER = -1


def _smallest(current: int | None, slots: int | None) -> int | None:
    """The smaller pool size; None (not reported yet) wins: a minimum over some workers would be a guess."""
    if current is None or slots is None:
        return None
    return slots if current == NO_WORKER else min(current, slots)


def _stamp_held(held_from: dict[str, float], uuid: str, record: TaskRecord, wall_offset: float) -> None:
    """When a worker took the task, in wall time: its own stamp, bounded by when its event reached us
    (event latency makes the arrival late; the worker's stamp is exact up to the nodes' clock skew)."""
    if record.held_from is None:
        return
    arrived = record.held_from + wall_offset
    stamped = record.received_at if record.received_at is not None else record.started_at
    held_from[uuid] = arrived if stamped is None else min(arrived, stamped)
