"""The backlog of each queue: waiting plus every task delivered to a worker and not finished, each once.

One function for both faces (the exporter's queue collector and the adapter's broker provider), from
two immutable snapshots: a broker read and the running tasks of the event stream.

- Redis gives the task id of every unacknowledged message:
  backlog = waiting + |unacked ids | running ids | prefetched ids| (the size of the set union; the
  prefetched ids are the stream's task-received without a start, which are unacked anyway).
  A prefetched task is unacked only; a late-ack task that runs is in both (once); an early-ack task
  that runs is in the running set only. The two snapshots are not taken at one instant: a task a worker
  took after the broker read began was counted as waiting by that read, so it joins the union only
  through the broker's own unacked ids (else a burst reads high by the tasks taken within one poll).
- RabbitMQ (and any broker that gives counts): backlog = waiting + unacknowledged + the running tasks
  whose message was already acknowledged (learned per worker and task name from ``inspect active``).

A running part that is not known (event stream down or warming up, a task of unknown queue, an
acknowledgement mode not learned yet) gives no running and no backlog for the queue, and says why.

The workers a queue needs: ``max(ceil(backlog / slots per worker), busy workers)``, where the slots per
worker are the smallest pool size its live workers report and the busy workers those running one of its
tasks. An HPA with ``AverageValue 1`` on it asks for exactly this many, whatever the concurrency, and never
for fewer workers than are busy. Unknown with the backlog, and while a pool size is not reported (or no
worker consumes a queue that has work): never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from lensing_core.brokers import BrokerSnapshot
from lensing_sources.events.state import NO_WORKER, RunningSnapshot

#: why a queue's running part is unknown when no event stream is consumed at all
NO_EVENTS = "events_off"
NO_INFLIGHT = "inflight_unknown"
#: why a queue's workers needed is not known while its backlog is
POOL_SIZE_UNKNOWN = "pool_size_unknown"  # a live worker of the queue has not reported its pool size yet
NO_WORKERS = "no_workers"  # work waits and no live worker consumes the queue: its pool size is not known


@dataclass(frozen=True, slots=True)
class QueueWork:
    waiting: int
    inflight: int | None
    running: int | None  # None: not known (``unknown`` says why)
    backlog: int | None  # None: not known (``unknown`` says why)
    unknown: str | None = None
    workers_needed: int | None = None  # None: not known (``needed_unknown`` says why)
    needed_unknown: str | None = None


def queue_work(broker: BrokerSnapshot, running: RunningSnapshot | None) -> dict[str, QueueWork]:
    """Per queue of the broker read: waiting, in flight, running and backlog (``running`` None: no events)."""
    out: dict[str, QueueWork] = {}
    empty: frozenset[str] = frozenset()
    for queue, depth in broker.queues.items():
        why = NO_EVENTS if running is None else running.reason or running.unknown.get(queue)
        ids = empty if running is None else running.by_queue.get(queue, empty)
        if why is not None and not (why == "ack_mode_unknown" and depth.unacked_ids is not None):
            out[queue] = QueueWork(depth.waiting, depth.inflight, None, None, why, None, why)
            continue
        assert running is not None
        if depth.unacked_ids is not None:  # ids: the union counts a late-ack running task once
            # the prefetched tasks the stream showed join too: an early-ack task leaves the unacked set a
            # moment before its task-started event arrives, and is then in no other set
            reserved = running.reserved.get(queue, empty)
            held = _held_before(ids | reserved, running.held_from, broker.read_at - broker.duration)
            backlog = depth.waiting + len(depth.unacked_ids | held)
        elif depth.inflight is not None:
            backlog = depth.waiting + depth.inflight + running.acked.get(queue, 0)
        else:
            out[queue] = QueueWork(depth.waiting, None, len(ids), None, NO_INFLIGHT, None, NO_INFLIGHT)
            continue
        slots = running.worker_slots.get(queue, NO_WORKER)
        needed, why_not = workers_needed(backlog, slots, running.busy_workers.get(queue, 0))
        out[queue] = QueueWork(depth.waiting, depth.inflight, len(ids), backlog, None, needed, why_not)
    return out


def workers_needed(backlog: int, slots: int | None, busy: int) -> tuple[int | None, str | None]:
    """(workers needed, None) or (None, why not): ``slots`` is the smallest pool size of the queue's live
    workers (None: one has not reported it; NO_WORKER: no live worker consumes the queue)."""
    if backlog == 0 and busy == 0:
        return 0, None  # whatever the pool size
    if slots is None:
        return None, POOL_SIZE_UNKNOWN
    if slots <= 0:  # NO_WORKER
        return None, NO_WORKERS
    return max(math.ceil(backlog / slots), busy), None


def _held_before(ids: frozenset[str], held_from: Mapping[str, float], read_began: float) -> frozenset[str]:
    """The tasks of ``ids`` a worker already held when the broker read began (unknown: held before)."""
    if not held_from:
        return ids
    return frozenset(i for i in ids if held_from.get(i, read_began) <= read_began)
