"""The backlog of each queue: waiting plus every task delivered to a worker and not finished, each once.

One function for both faces (the exporter's queue collector and the adapter's broker provider), from
two immutable snapshots: a broker read and the running tasks of the event stream.

- Redis gives the task id of every unacknowledged message:
  backlog = waiting + |unacked ids | running ids | prefetched ids| (the size of the set union; the
  prefetched ids are the stream's task-received without a start, which are unacked anyway).
  A prefetched task is unacked only; a late-ack task that runs is in both (once); an early-ack task
  that runs is in the running set only.
- RabbitMQ (and any broker that gives counts): backlog = waiting + unacknowledged + the running tasks
  whose message was already acknowledged (learned per worker and task name from ``inspect active``).

A running part that is not known (event stream down or warming up, a task of unknown queue, an
acknowledgement mode not learned yet) gives no running and no backlog for the queue, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from lensing_core.brokers import BrokerSnapshot
from lensing_sources.events.state import RunningSnapshot

#: why a queue's running part is unknown when no event stream is consumed at all
NO_EVENTS = "events_off"
NO_INFLIGHT = "inflight_unknown"


@dataclass(frozen=True, slots=True)
class QueueWork:
    waiting: int
    inflight: int | None
    running: int | None  # None: not known (``unknown`` says why)
    backlog: int | None  # None: not known (``unknown`` says why)
    unknown: str | None = None


def queue_work(broker: BrokerSnapshot, running: RunningSnapshot | None) -> dict[str, QueueWork]:
    """Per queue of the broker read: waiting, in flight, running and backlog (``running`` None: no events)."""
    out: dict[str, QueueWork] = {}
    empty: frozenset[str] = frozenset()
    for queue, depth in broker.queues.items():
        why = NO_EVENTS if running is None else running.reason or running.unknown.get(queue)
        ids = empty if running is None else running.by_queue.get(queue, empty)
        if why is not None and not (why == "ack_mode_unknown" and depth.unacked_ids is not None):
            out[queue] = QueueWork(depth.waiting, depth.inflight, None, None, why)
            continue
        assert running is not None
        if depth.unacked_ids is not None:  # ids: the union counts a late-ack running task once
            # the prefetched tasks the stream showed join too: an early-ack task leaves the unacked set a
            # moment before its task-started event arrives, and is then in no other set
            reserved = running.reserved.get(queue, empty)
            backlog: int | None = depth.waiting + len(depth.unacked_ids | ids | reserved)
        elif depth.inflight is not None:
            backlog = depth.waiting + depth.inflight + running.acked.get(queue, 0)
        else:
            out[queue] = QueueWork(depth.waiting, None, len(ids), None, NO_INFLIGHT)
            continue
        out[queue] = QueueWork(depth.waiting, depth.inflight, len(ids), backlog)
    return out
