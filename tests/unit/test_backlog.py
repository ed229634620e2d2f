"""The one backlog function, from a broker read and the event stream's running tasks (fake clock)."""

from __future__ import annotations

from lensing_core.brokers import BrokerSnapshot, QueueDepth
from lensing_sources.backlog import queue_work
from lensing_sources.events.state import ActiveTask, EventState, RunningSnapshot, StateConfig
from tests.unit.test_events_state import FakeClock, ev, heartbeat, make, run_task


def read(**queues: QueueDepth) -> BrokerSnapshot:
    return BrokerSnapshot(queues=queues, read_at=0.0, duration=0.0)


def running(by_queue: dict[str, set[str]], acked: dict[str, int] | None = None, **unknown: str) -> RunningSnapshot:
    return RunningSnapshot(None, {q: frozenset(ids) for q, ids in by_queue.items()}, acked or {}, unknown)


def test_redis_unites_unacked_and_running_ids_each_once() -> None:
    # t1 runs with a late ack (in both), t2 runs with an early ack (running only), t3 is prefetched
    depth = QueueDepth(waiting=5, inflight=2, unacked_ids=frozenset({"t1", "t3"}))
    work = queue_work(read(analyses=depth), running({"analyses": {"t1", "t2"}}))["analyses"]
    assert (work.waiting, work.inflight, work.running, work.backlog, work.unknown) == (5, 2, 2, 8, None)


def test_counts_add_only_the_acknowledged_running_tasks() -> None:
    depth = QueueDepth(waiting=3, inflight=4)  # RabbitMQ: 4 unacknowledged (prefetched or late-ack running)
    work = queue_work(read(analyses=depth), running({"analyses": {"a", "b", "c"}}, acked={"analyses": 2}))
    assert work["analyses"].backlog == 3 + 4 + 2 and work["analyses"].running == 3


def test_unknown_running_part_gives_no_backlog_and_says_why() -> None:
    depth = QueueDepth(waiting=3, inflight=0)
    assert queue_work(read(q=depth), None)["q"].unknown == "events_off"
    for reason in ("events_down", "warming_up", "unplaced"):
        work = queue_work(read(q=depth), RunningSnapshot(reason, {}, {}, {}))["q"]
        assert (work.running, work.backlog, work.unknown) == (None, None, reason)
    work = queue_work(read(q=depth, r=depth), running({}, q="ack_mode_unknown"))
    assert work["q"].backlog is None and work["q"].unknown == "ack_mode_unknown"
    assert work["r"].backlog == 3  # another queue is not affected
    no_inflight = queue_work(read(q=QueueDepth(waiting=3)), running({}))["q"]
    assert no_inflight.backlog is None and no_inflight.unknown == "inflight_unknown"


def test_redis_ids_make_the_acknowledgement_mode_irrelevant() -> None:
    depth = QueueDepth(waiting=1, inflight=0, unacked_ids=frozenset())
    work = queue_work(read(q=depth), running({"q": {"t"}}, q="ack_mode_unknown"))["q"]
    assert work.backlog == 2


def test_running_snapshot_follows_live_workers_only() -> None:
    clock = FakeClock()
    state = make(clock, worker_timeout=10.0)
    state.apply(heartbeat("w1@a", active=0))
    state.apply(heartbeat("w2@b", active=0))
    run_task(state, "t1", host="w1@a")
    run_task(state, "t2", host="w2@b")
    assert state.running_snapshot().by_queue == {"analyses": frozenset({"t1", "t2"})}
    clock.now += 8
    state.apply(heartbeat("w2@b", active=1, ts=8.0))
    clock.now += 5  # w1 silent for 13 s: gone; its task is no longer running (not counted twice)
    assert state.running_snapshot().by_queue == {"analyses": frozenset({"t2"})}
    state.apply(ev("task-succeeded", "w2@b", uuid="t2", timestamp=14.0))
    assert state.running_snapshot().by_queue == {}


def test_running_snapshot_unknown_while_down_or_warming_up() -> None:
    clock = FakeClock()
    state = EventState(StateConfig(warmup=3.0), clock=clock)
    assert state.running_snapshot().reason == "events_down"
    state.on_connected()
    assert state.running_snapshot().reason == "warming_up"
    clock.now += 3.0
    assert state.running_snapshot().reason is None
    state.on_disconnected()
    assert state.running_snapshot().reason == "events_down"


def test_acknowledged_flag_learned_per_worker_and_task_name() -> None:
    clock = FakeClock()
    state = make(clock, learn_acks=True)
    state.apply(heartbeat("w1@a"))
    run_task(state, "t1", name="early", host="w1@a")
    run_task(state, "t2", name="late", host="w1@a")
    snap = state.running_snapshot()
    assert snap.unknown == {"analyses": "ack_mode_unknown"}
    state.sweep()
    assert state.unresolved_workers == ["w1@a"]  # the control asks it `inspect active`
    state.set_active_tasks(
        "w1@a",
        [ActiveTask("t1", "early", "analyses", 12.5, True), ActiveTask("t2", "late", "analyses", 12.5, False)],
    )
    snap = state.running_snapshot()
    assert snap.unknown == {} and snap.acked == {"analyses": 1}
    run_task(state, "t3", name="early", host="w1@a")  # learned once per name, not asked per task
    assert state.running_snapshot().acked == {"analyses": 2}
    state.sweep()
    assert state.unresolved_workers == []


def test_unplaced_running_task_makes_its_workers_queues_unknown() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat("w1@a"))
    state.apply(ev("task-started", "w1@a", uuid="x", timestamp=1.0))  # no sent/received: queue unknown
    assert state.running_snapshot().reason == "unplaced"
    state.set_worker_info("w1@a", ["a", "b"], 4)
    assert state.running_snapshot().unknown == {"a": "unplaced", "b": "unplaced"}
