"""The one backlog function, from a broker read and the event stream's running tasks (fake clock)."""

from __future__ import annotations

import time

import pytest

from lensing_core.brokers import BrokerSnapshot, QueueDepth
from lensing_sources.backlog import QueueWork, queue_work, workers_needed
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


def test_a_task_taken_after_the_broker_read_began_is_counted_once_as_waiting() -> None:
    # the read began at 100: t-old was held since 90 (counted as running), t-new since 101 (the read still
    # saw it waiting); t-late (held since 101 too) was in the read's unacked hash already: counted there
    depth = QueueDepth(waiting=6, inflight=1, unacked_ids=frozenset({"t-late"}))
    snapshot = BrokerSnapshot(queues={"q": depth}, read_at=100.5, duration=0.5)
    ids = {"q": frozenset({"t-old", "t-new"})}
    held = {"t-old": 90.0, "t-new": 101.0, "t-late": 101.0}
    taken = RunningSnapshot(None, ids, {}, {}, {"q": frozenset({"t-late"})}, held)
    work = queue_work(snapshot, taken)["q"]
    assert (work.running, work.backlog) == (2, 6 + 2)  # t-late, t-old: not t-new a second time
    # a task the stream saw held at the very instant the read began was held before it
    at_start = RunningSnapshot(None, {"q": frozenset({"t-new"})}, {}, {}, {}, {"t-new": 100.0})
    assert queue_work(snapshot, at_start)["q"].backlog == 6 + 1 + 1


def test_running_snapshot_stamps_when_a_worker_took_each_task() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat("w1@a", active=0))
    now = time.time()
    for uuid in ("t1", "t2", "t3"):
        state.apply(ev("task-sent", "client", uuid=uuid, name="lensing.analyse_lens", queue="analyses"))
    # t1: the worker's stamp (10 s ago, its event 4 s ago); t2: a stamp later than its event reached us
    # (the worker's clock runs ahead): when it reached us
    state.apply(ev("task-received", "w1@a", uuid="t1", name="lensing.analyse_lens", timestamp=now - 10))
    state.apply(ev("task-started", "w1@a", uuid="t1", timestamp=now - 9))
    state.apply(ev("task-received", "w1@a", uuid="t2", name="lensing.analyse_lens", timestamp=now + 60))
    clock.now += 4
    before = time.time()
    held = state.running_snapshot().held_from
    after = time.time()
    assert set(held) == {"t1", "t2"} and held["t1"] == now - 10
    assert before - 4 <= held["t2"] <= after - 4
    # started without a received event: its start stamp
    state.apply(ev("task-started", "w1@a", uuid="t3", name="lensing.analyse_lens", timestamp=now - 30))
    assert state.running_snapshot().held_from["t3"] == now - 30


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


@pytest.mark.parametrize(
    ("backlog", "slots", "busy", "expected"),
    [
        (0, None, 0, (0, None)),  # nothing to do: 0 whatever the pool size
        (0, -1, 0, (0, None)),
        (9, 4, 0, (3, None)),  # ceil(9 / 4)
        (8, 4, 0, (2, None)),
        (1, 4, 0, (1, None)),
        (3, 1, 0, (3, None)),  # one slot a worker: a worker a task
        (3, 0, 0, (None, "no_workers")),  # never a division by a pool size of 0
        (2, 4, 2, (2, None)),  # two workers busy with one task each: never fewer than are busy
        (3, 4, 3, (3, None)),
        (40, 4, 3, (10, None)),
        (5, None, 1, (None, "pool_size_unknown")),
        (5, -1, 0, (None, "no_workers")),
        (0, -1, 1, (None, "no_workers")),
    ],
)
def test_workers_needed(backlog: int, slots: int | None, busy: int, expected: tuple[int | None, str | None]) -> None:
    assert workers_needed(backlog, slots, busy) == expected


def test_queue_work_gives_the_workers_needed_with_the_backlog() -> None:
    depth = QueueDepth(waiting=7, inflight=0, unacked_ids=frozenset())
    snapshot = BrokerSnapshot(
        queues={"q": depth, "idle": QueueDepth(0, 0, unacked_ids=frozenset())}, read_at=100.0, duration=0.01
    )
    taken = RunningSnapshot(None, {"q": frozenset({"a", "b"})}, {}, {}, {}, {}, {"q": 4, "idle": 4}, {"q": 2})
    work = queue_work(snapshot, taken)
    assert (work["q"].backlog, work["q"].workers_needed, work["q"].needed_unknown) == (9, 3, None)
    assert (work["idle"].workers_needed, work["idle"].needed_unknown) == (0, None)
    down = queue_work(snapshot, RunningSnapshot("events_down", {}, {}, {}))["q"]
    assert (down.workers_needed, down.needed_unknown) == (None, "events_down")


def test_every_field_of_an_unknown_queue_and_of_a_broker_without_inflight() -> None:
    depth = QueueDepth(waiting=5, inflight=2, unacked_ids=frozenset({"a"}))
    snapshot = BrokerSnapshot(queues={"q": depth}, read_at=100.0, duration=0.01)
    down = queue_work(snapshot, RunningSnapshot("events_down", {}, {}, {}))["q"]
    assert down == QueueWork(5, 2, None, None, "events_down", None, "events_down")
    counts_only = BrokerSnapshot(queues={"q": QueueDepth(waiting=5, inflight=None)}, read_at=100.0, duration=0.01)
    known = RunningSnapshot(None, {"q": frozenset({"r"})}, {}, {}, {}, {}, {"q": 4}, {"q": 1})
    assert queue_work(counts_only, known)["q"] == QueueWork(
        5, None, 1, None, "inflight_unknown", None, "inflight_unknown"
    )


def test_prefetched_and_unstamped_tasks_join_the_union() -> None:
    # prefetched "p" (task-received, its message already out of the unacked hash for an instant) and running "r"
    # without a stamp (held before the read, for all we know) both count; "late" was taken after the read began
    depth = QueueDepth(waiting=3, inflight=0, unacked_ids=frozenset())
    snapshot = BrokerSnapshot(queues={"q": depth}, read_at=100.5, duration=0.5)
    running = RunningSnapshot(
        None,
        {"q": frozenset({"r", "late"})},
        {},
        {},
        {"q": frozenset({"p"})},
        {"p": 90.0, "late": 101.0},
        {"q": 2},
        {"q": 1},
    )
    work = queue_work(snapshot, running)["q"]
    assert (work.running, work.backlog, work.workers_needed, work.needed_unknown) == (2, 5, 3, None)


def test_workers_needed_unknown_while_a_pool_size_is_not_reported() -> None:
    depth = QueueDepth(waiting=6, inflight=0, unacked_ids=frozenset())
    snapshot = BrokerSnapshot(queues={"q": depth}, read_at=100.0, duration=0.01)
    running = RunningSnapshot(None, {}, {}, {}, {}, {}, {"q": None}, {"q": 3})
    work = queue_work(snapshot, running)["q"]
    assert (work.backlog, work.workers_needed, work.needed_unknown) == (6, None, "pool_size_unknown")
    busy_only = RunningSnapshot(None, {}, {}, {}, {}, {}, {"q": 4}, {"q": 3})
    assert queue_work(snapshot, busy_only)["q"].workers_needed == 3  # ceil(6 / 4) = 2, but 3 workers are busy


def test_a_queue_no_worker_consumes_and_every_queue_of_a_broker_without_inflight() -> None:
    waiting = BrokerSnapshot(queues={"q": QueueDepth(2, 0, unacked_ids=frozenset())}, read_at=100.0, duration=0.01)
    nobody = RunningSnapshot(None, {}, {}, {}, {}, {}, {}, {})
    assert queue_work(waiting, nobody)["q"].needed_unknown == "no_workers"
    two = BrokerSnapshot(queues={"a": QueueDepth(1, None), "b": QueueDepth(2, None)}, read_at=100.0, duration=0.01)
    assert set(queue_work(two, nobody)) == {"a", "b"}
