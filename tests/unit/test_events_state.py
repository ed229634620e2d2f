"""The bounded event state, with a fake clock: expiry, worker timeouts, reconciliation, label caps."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from lensing_sources.events.labels import LabelCap, TaskMatcher
from lensing_sources.events.state import EventState, StateConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_clock_values = itertools.count(1)


def ev(type_: str, hostname: str = "w1@pod-a", **fields: Any) -> dict[str, Any]:
    fields.setdefault("timestamp", 0.0)
    fields.setdefault("pid", 100)
    fields.setdefault("clock", next(_clock_values))
    return {"type": type_, "hostname": hostname, **fields}


def heartbeat(hostname: str = "w1@pod-a", active: int = 0, ts: float = 0.0, clock: int | None = None) -> dict[str, Any]:
    return ev("worker-heartbeat", hostname, active=active, freq=2.0, timestamp=ts, clock=clock or next(_clock_values))


def make(clock: FakeClock, **config: Any) -> EventState:
    state = EventState(StateConfig(warmup=0.0, **config), clock=clock)
    state.on_connected()
    return state


def run_task(state: EventState, uuid: str, name: str = "lensing.analyse_lens", host: str = "w1@pod-a") -> None:
    state.apply(ev("task-sent", "client", uuid=uuid, name=name, queue="analyses", timestamp=10.0))
    state.apply(ev("task-received", host, uuid=uuid, name=name, timestamp=11.0))
    state.apply(ev("task-started", host, uuid=uuid, timestamp=12.5))


def test_lifecycle_counts_and_histograms() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat())
    run_task(state, "t1")
    snap = state.snapshot()
    assert snap.active == {("analyses",): 1}
    state.apply(ev("task-succeeded", uuid="t1", runtime=3.0, timestamp=15.5))
    snap = state.snapshot()
    assert snap.active == {("analyses",): 0}
    assert {s: n for (t, s), n in snap.tasks_total.items() if t == "lensing.analyse_lens"} == {
        "sent": 1,
        "received": 1,
        "started": 1,
        "succeeded": 1,
    }
    buckets, total = snap.runtime["lensing.analyse_lens"]
    assert total == 3.0 and buckets[-1] == ("+Inf", 1.0)
    assert dict(buckets)["2.5"] == 0 and dict(buckets)["5.0"] == 1
    _wait_buckets, wait_total = snap.queue_wait["lensing.analyse_lens"]
    assert wait_total == 2.5  # task-sent (10.0) to task-started (12.5)


def test_worker_past_timeout_stops_counting_at_once_and_is_swept() -> None:
    clock = FakeClock()
    state = make(clock, worker_timeout=5.0)
    state.apply(heartbeat())
    run_task(state, "t1")
    clock.now += 4.9
    assert state.snapshot().active == {("analyses",): 1}
    clock.now += 0.2  # past the timeout: gone from the gauges even before a sweep
    snap = state.snapshot()
    assert snap.active == {("analyses",): 0}
    assert snap.workers == {("analyses",): 0}
    state.sweep()
    assert state.workers == {}


def test_worker_offline_without_running_tasks_is_gone_and_late_end_events_do_not_revive_it() -> None:
    clock = FakeClock()
    state = make(clock)
    run_task(state, "t1")
    state.apply(ev("task-succeeded", uuid="t1", runtime=1.0))
    state.apply(ev("worker-offline"))
    assert state.workers == {}
    state.apply(ev("task-failed", uuid="t1"))  # a duplicate end flushed late: no worker comes back
    assert state.workers == {}
    assert state.tasks_total[("lensing.analyse_lens", "succeeded")] == 1


def test_a_worker_in_warm_shutdown_keeps_its_running_tasks_until_they_end() -> None:
    # Celery sends worker-offline when the warm shutdown begins (its pod terminating), then the end events of
    # the tasks it lets finish (seen with a real worker: offline at SIGTERM, task-succeeded 5.6 s later)
    clock = FakeClock()
    state = make(clock, worker_timeout=5.0)
    state.apply(heartbeat())
    state.set_worker_info("w1@pod-a", ["analyses"], 4)
    run_task(state, "t1")
    run_task(state, "t2")
    state.apply(ev("task-received", uuid="t3", name="lensing.analyse_lens", timestamp=13.0))  # prefetched
    state.apply(ev("worker-offline"))
    clock.now += 60  # no heartbeat any more: far past --worker-timeout, still draining
    state.sweep()
    snap = state.snapshot()
    assert snap.active == {("analyses",): 2}  # its analyses still run
    assert snap.workers == snap.slots == {("analyses",): 0}  # it takes no new work
    running = state.running_snapshot()
    assert running.by_queue == {"analyses": frozenset({"t1", "t2"})}
    assert running.reserved == {}  # the prefetched task goes back to the queue
    assert running.busy_workers == {} and running.worker_slots == {}  # its pod left the Deployment's count
    state.apply(ev("task-succeeded", uuid="t1", runtime=61.0))
    assert state.running_snapshot().by_queue == {"analyses": frozenset({"t2"})}
    state.apply(ev("task-succeeded", uuid="t2", runtime=61.0))
    assert state.workers == {}  # its last task ended: the shutdown is done
    assert state.running_snapshot().by_queue == {}


def test_a_drain_that_never_ends_stops_counting_after_the_drain_timeout() -> None:
    clock = FakeClock()
    state = make(clock, drain_timeout=100.0)
    state.apply(heartbeat())
    run_task(state, "t1")
    state.apply(ev("worker-offline"))
    clock.now += 99.9
    assert state.running_snapshot().by_queue == {"analyses": frozenset({"t1"})}
    clock.now += 0.2  # killed after its grace period: no end event will come
    assert state.running_snapshot().by_queue == {}
    state.sweep()
    assert state.workers == {} and state.lost["task_end_missing"] == 1


def test_a_worker_back_online_under_the_same_name_is_a_new_process() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat())
    run_task(state, "t1")
    state.apply(ev("worker-offline"))
    state.apply(ev("worker-online", pid=200))
    assert state.running_snapshot().by_queue == {}
    assert state.workers["w1@pod-a"].draining_since is None


def test_pool_sizes_and_busy_workers_per_queue() -> None:
    clock = FakeClock()
    state = make(clock)
    for host in ("w1@a", "w2@b", "w3@c"):
        state.apply(heartbeat(host))
    state.set_worker_info("w1@a", ["analyses"], 4)
    state.set_worker_info("w2@b", ["analyses", "cpu"], 2)
    state.set_worker_info("w3@c", ["cpu"], 8)
    run_task(state, "t1", host="w1@a")
    run_task(state, "t2", host="w1@a")
    run_task(state, "t3", host="w2@b")
    running = state.running_snapshot()
    assert running.worker_slots == {"analyses": 2, "cpu": 2}  # the smallest pool: never fewer workers than needed
    assert running.busy_workers == {"analyses": 2}  # workers, not tasks
    state.apply(heartbeat("w5@e"))
    state.set_worker_info("w5@e", ["cpu"], None)  # its pool size not reported yet
    assert state.running_snapshot().worker_slots == {"analyses": 2, "cpu": None}  # a minimum of some is a guess
    state.apply(heartbeat("w4@d"))  # its queues not known yet: no queue's minimum is sure
    assert state.running_snapshot().worker_slots == {"analyses": None, "cpu": None}


def test_heartbeat_count_reconciles_lost_end_events() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat(active=0, ts=0.0))
    run_task(state, "t1")
    run_task(state, "t2")
    state.apply(heartbeat(active=0, ts=20.0))  # one heartbeat short: the end events may be on their way
    assert len(state.workers["w1@pod-a"].running) == 2
    state.apply(heartbeat(active=0, ts=22.0))
    assert state.workers["w1@pod-a"].running == {}
    assert state.lost["task_end_missing"] == 2


def test_after_a_reconnection_the_first_heartbeat_resyncs() -> None:
    clock = FakeClock()
    state = make(clock)
    run_task(state, "t1")
    run_task(state, "t2")
    state.on_disconnected()
    assert not state.snapshot().gauges
    state.on_connected()
    state.apply(heartbeat(active=1, ts=30.0))
    assert len(state.workers["w1@pod-a"].running) == 1


def test_heartbeat_gaps_count_lost_events_only_when_the_clock_agrees() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat(ts=0.0, clock=10))
    state.apply(heartbeat(ts=8.0, clock=13))  # beats at 2, 4, 6 missing and the clock ticked for them
    assert state.lost["heartbeat_gap"] == 2  # min(3 by time, 2 by clock)
    state.apply(heartbeat(ts=20.0, clock=14))  # a worker that was blocked sent nothing: no loss
    assert state.lost["heartbeat_gap"] == 2


def test_restarted_worker_under_the_same_name_drops_old_tasks() -> None:
    clock = FakeClock()
    state = make(clock)
    run_task(state, "t1")
    state.apply(ev("worker-online", pid=200, active=0, freq=2.0))
    assert state.workers["w1@pod-a"].running == {}


def test_tasks_are_bounded_and_expire() -> None:
    clock = FakeClock()
    state = make(clock, max_tracked_tasks=1000, task_expiry=60.0)
    for i in range(20_000):
        state.apply(ev("task-received", uuid=f"id-{i}", name="lensing.analyse_lens"))
    assert len(state.tasks) == 1000
    clock.now += 61
    state.sweep()
    assert len(state.tasks) == 0


def test_running_task_survives_lru_eviction() -> None:
    clock = FakeClock()
    state = make(clock, max_tracked_tasks=10)
    state.apply(heartbeat())
    run_task(state, "long")
    for i in range(100):
        state.apply(ev("task-received", uuid=f"id-{i}", name="x"))
    assert "long" not in state.tasks
    state.apply(ev("task-succeeded", uuid="long", runtime=5.0))
    assert state.tasks_total[("lensing.analyse_lens", "succeeded")] == 1
    assert state.runtime["lensing.analyse_lens"].count == 1


def test_new_worker_hostnames_do_not_accumulate() -> None:
    clock = FakeClock()
    state = make(clock, worker_timeout=5.0)
    for i in range(5000):
        state.apply(heartbeat(hostname=f"celery@pod-{i}"))
        if i % 100 == 0:
            clock.now += 10
            state.sweep()
    assert len(state.workers) <= 100


def test_task_names_are_capped() -> None:
    clock = FakeClock()
    state = make(clock, max_task_names=2)
    for name in ("a", "b", "c", "d"):
        state.apply(ev("task-received", uuid=name, name=name))
    assert {t for t, _s in state.tasks_total} == {"a", "b", "other"}
    assert state.tasks_total[("other", "received")] == 2


def test_queue_labels_skip_control_and_direct_queues() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat())
    state.set_worker_info("w1@pod-a", ["analyses", "w1@pod-a.dq2", "celery.pidbox"], 4)
    snap = state.snapshot()
    assert snap.workers == {("analyses",): 1}
    assert snap.slots == {("analyses",): 4}


def test_slots_absent_while_a_worker_of_the_queue_has_not_told_its_pool() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat("w1"))
    state.apply(heartbeat("w2"))
    state.set_worker_info("w1", ["analyses"], 4)
    state.set_worker_info("w2", ["analyses"], None)
    snap = state.snapshot()
    assert snap.workers == {("analyses",): 2}
    assert ("analyses",) not in snap.slots


def test_analysis_filter_and_worker_labels() -> None:
    clock = FakeClock()
    state = make(clock, analysis_tasks=("lensing.analyse_*",), worker_labels=True)
    state.apply(heartbeat())
    run_task(state, "t1", name="lensing.analyse_lens")
    run_task(state, "t2", name="lensing.cleanup")
    assert state.snapshot().active == {("analyses", "w1@pod-a"): 1}


def test_gauges_wait_for_warmup_after_connecting() -> None:
    clock = FakeClock()
    state = EventState(StateConfig(warmup=3.0), clock=clock)
    assert not state.snapshot().gauges
    state.on_connected()
    assert not state.snapshot().gauges
    clock.now += 3
    assert state.snapshot().gauges


def test_bad_events_are_dropped_with_a_reason() -> None:
    state = make(FakeClock())
    state.apply({"type": "task-started"})  # no uuid
    state.apply({"type": "custom-thing"})
    state.apply(["not", "an", "event"])
    assert state.dropped == {"malformed": 2, "unsupported": 1}
    assert state.received == 3


def test_label_cap_keeps_first_values() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        ((), "anything", True),
        ((), None, True),
        (("lensing.analyse_*",), "lensing.analyse_lens", True),
        (("lensing.analyse_*",), "lensing.Analyse_lens", False),
        (("lensing.analyse_*", "fit.?"), "fit.x", True),
        (("lensing.analyse_*",), None, False),
    ],
)
def test_glob_matching(patterns: tuple[str, ...], name: str | None, expected: bool) -> None:
    assert TaskMatcher(patterns)(name) is expected


def test_collector_exports_exactly_the_catalog_names() -> None:
    from exporter.collectors.events import EventCollector
    from lensing_core.catalog import EVENTS

    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat())
    run_task(state, "t1")
    state.apply(ev("task-succeeded", uuid="t1", runtime=1.0))
    families = {f.name: f for f in EventCollector(state).collect()}
    # prometheus_client strips _total from counter family names
    exported = {name + "_total" if f.type == "counter" else name for name, f in families.items()}
    assert exported == set(EVENTS)
    for name, family in families.items():
        spec = EVENTS[name + "_total" if family.type == "counter" else name]
        assert family.type == spec.kind
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(spec.labels), sample

    state.on_disconnected()
    names = {f.name for f in EventCollector(state).collect()}
    assert "celery_workers" not in names and "active_analyses" not in names
    assert "celery_tasks" in names


# -- tasks the event stream did not show: already running, or on a worker whose task events are off --------------
# The sequence below is the one the demo produced (captured off its Redis): the worker was started without -E and
# the exporter's enable_events did not reach it (sent while its remote-control queue was not listening yet), so only
# worker-online and heartbeats came, the heartbeats saying both pool processes were busy; task-sent only for tasks
# queued behind the burst.
def _demo_sequence(state: EventState) -> None:
    host = "demo-32483@vm"
    state.apply(ev("worker-online", host, pid=32491, active=0, freq=2.0, timestamp=21.32, clock=1))
    state.apply(ev("task-sent", "gen32483@vm", uuid="late-1", name="lensing.analyse_lens", queue="analyses"))
    for i, ts in enumerate((23.33, 25.33, 27.34)):
        state.apply(ev("worker-heartbeat", host, pid=32491, active=2, freq=2.0, timestamp=ts, clock=4 + i))
        state.apply(ev("task-sent", "gen32483@vm", uuid=f"late-{i}", name="lensing.analyse_lens", queue="cpu"))


def test_busy_worker_whose_tasks_the_stream_did_not_show_is_asked_and_its_tasks_counted() -> None:
    from lensing_sources.events.state import ActiveTask

    clock = FakeClock()
    state = make(clock)
    _demo_sequence(state)
    state.set_worker_info("demo-32483@vm", ["analyses", "cpu"], 2)
    state.sweep()
    # the heartbeats say 2 running, the stream showed none: the worker is asked what it runs
    assert state.unresolved_workers == ["demo-32483@vm"]
    state.set_active_tasks(
        "demo-32483@vm",
        [
            ActiveTask("b-1", "lensing.analyse_lens", "analyses", 20.0),
            ActiveTask("b-2", "lensing.analyse_lens", "cpu", 21.0),
        ],
    )
    snap = state.snapshot()
    assert snap.busy == {("analyses",): 2, ("cpu",): 2}
    assert snap.active == {("analyses",): 1, ("cpu",): 1}
    state.sweep()
    assert state.unresolved_workers == []
    # their end events come like any other (the name is known now)
    state.apply(ev("task-succeeded", "demo-32483@vm", pid=32491, uuid="b-1", runtime=3.0, timestamp=24.0))
    assert state.snapshot().active == {("analyses",): 0, ("cpu",): 1}
    assert state.tasks_total[("lensing.analyse_lens", "succeeded")] == 1


def test_one_short_heartbeat_is_not_enough_to_ask() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat(active=0, ts=0.0))
    state.apply(heartbeat(active=1, ts=2.0))  # the task-started may still be in the worker's event buffer
    state.sweep()
    assert state.unresolved_workers == []
    run_task(state, "t1")
    state.apply(heartbeat(active=1, ts=4.0))
    state.sweep()
    assert state.unresolved_workers == []


def test_first_heartbeat_of_a_busy_worker_asks_at_once() -> None:
    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat(active=2, ts=0.0))  # the exporter connected while the worker was busy
    state.sweep()
    assert state.unresolved_workers == ["w1@pod-a"]


def test_an_answer_does_not_bring_back_a_task_that_ended_meanwhile() -> None:
    from lensing_sources.events.state import ActiveTask

    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat(active=1, ts=0.0))
    run_task(state, "t1")
    state.apply(ev("task-succeeded", uuid="t1", runtime=1.0, timestamp=13.5))
    state.set_active_tasks("w1@pod-a", [ActiveTask("t1", "lensing.analyse_lens", "analyses", 12.5)])
    assert state.workers["w1@pod-a"].running == {}


def test_task_of_unknown_name_or_queue_is_resolved_not_guessed_from_other_tasks() -> None:
    from lensing_sources.events.state import ActiveTask

    clock = FakeClock()
    state = make(clock, analysis_tasks=("lensing.analyse_*",))
    state.apply(heartbeat(active=0, ts=0.0))
    state.set_worker_info("w1@pod-a", ["analyses", "cpu"], 2)
    # task-sent of another task of the same name said `cpu`: that says nothing of this one's queue
    state.apply(ev("task-sent", "client", uuid="other", name="lensing.analyse_lens", queue="cpu"))
    state.apply(ev("task-received", uuid="a", name="lensing.analyse_lens", timestamp=1.0))
    state.apply(ev("task-started", uuid="a", timestamp=1.5))
    state.apply(ev("task-started", uuid="b", timestamp=1.6))  # received before task events were on: no name
    assert state.snapshot().active == {("analyses",): 0, ("cpu",): 0, ("unknown",): 1}
    state.sweep()
    assert state.unresolved_workers == ["w1@pod-a"]
    state.set_active_tasks(
        "w1@pod-a",
        [ActiveTask("a", "lensing.analyse_lens", "analyses", 1.5), ActiveTask("b", "lensing.analyse_lens", "cpu", 1.6)],
    )
    assert state.snapshot().active == {("analyses",): 1, ("cpu",): 1}
    state.sweep()
    assert state.unresolved_workers == []


def test_inspect_active_answer_is_parsed_defensively() -> None:
    from lensing_sources.events.control import parse_active_tasks
    from lensing_sources.events.state import ActiveTask

    answer = [
        {"id": "a", "name": "lensing.analyse_lens", "time_start": 12.5, "delivery_info": {"routing_key": "cpu"}},
        {"id": "b", "name": 3, "time_start": True, "delivery_info": None},
        {"name": "no id"},
        "nonsense",
    ]
    assert parse_active_tasks(answer) == [
        ActiveTask("a", "lensing.analyse_lens", "cpu", 12.5),
        ActiveTask("b", None, None, None),
    ]
    assert parse_active_tasks(None) == []


def test_prefetched_task_of_unknown_queue_is_placed_before_it_starts() -> None:
    from lensing_sources.events.state import ActiveTask

    clock = FakeClock()
    state = make(clock)
    state.apply(heartbeat(active=0, ts=0.0))
    state.set_worker_info("w1@pod-a", ["analyses", "cpu"], 2)
    state.apply(ev("task-received", uuid="r", name="lensing.analyse_lens", timestamp=1.0))  # no task-sent seen
    state.sweep()
    assert state.unresolved_workers == ["w1@pod-a"]
    state.set_active_tasks("w1@pod-a", [], reserved=[ActiveTask("r", "lensing.analyse_lens", "cpu", None)])
    state.sweep()
    assert state.unresolved_workers == []
    state.apply(ev("task-started", uuid="r", timestamp=2.0))
    assert state.snapshot().active == {("analyses",): 0, ("cpu",): 1}
