"""The pod deletion cost loop against an in-memory pod list (on the real API server: tests/controlplane/).

Only what changed is patched, busy pods first and at most --pod-deletion-cost-max-patches a pass; nothing is patched
while the event stream does not know who is idle; a refused or failed call is counted and logged once."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from adapter.cli import build_parser
from adapter.config import ConfigError
from adapter.kubeapi import KubeAPIError
from adapter.pod_cost import COST_ANNOTATION, DEFAULT_POD_PATTERN, PodCostAnnotator, PodCostSettings, settings_from
from lensing_sources.events.state import EventState, StateConfig

NS = "lensing-production"


class FakePods:
    """GET .../pods and merge patches of one annotation, as kube-apiserver answers them."""

    def __init__(self, names: list[str], fail: KubeAPIError | None = None) -> None:
        self.annotations: dict[str, dict[str, str]] = {name: {} for name in names}
        self.terminating: set[str] = set()
        self.fail = fail
        self.lists = 0
        self.patched: list[tuple[str, str]] = []

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        assert (method, path) == ("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector=component%3Dcelery-worker")
        self.lists += 1
        if self.fail is not None:
            raise self.fail
        items = []
        for name, pod_annotations in self.annotations.items():
            meta: dict[str, Any] = {"name": name, "annotations": dict(pod_annotations)}
            if name in self.terminating:
                meta["deletionTimestamp"] = "2026-12-06T10:00:00Z"
            items.append({"metadata": meta, "status": {"phase": "Running"}})
        return {"items": items}

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        value = patch["metadata"]["annotations"][COST_ANNOTATION]
        self.patched.append((name, value))
        self.annotations[name][COST_ANNOTATION] = value
        return {}

    async def close(self) -> None:
        pass

    def costs(self) -> dict[str, str]:
        return {name: a.get(COST_ANNOTATION, "") for name, a in self.annotations.items()}


def settings(max_patches: int = 20) -> PodCostSettings:
    return PodCostSettings(NS, "component=celery-worker", re.compile(DEFAULT_POD_PATTERN), 5.0, max_patches)


def settings_of(argv: list[str]) -> PodCostSettings | None:
    return settings_from(build_parser().parse_args(["--broker-url", "redis://127.0.0.1:6379/0", *argv]))


def run(annotator: PodCostAnnotator) -> int:
    return asyncio.run(annotator.run_once())


def test_each_pod_carries_its_workers_running_tasks_and_only_changes_are_patched() -> None:
    pods = FakePods(["w-a", "w-b", "w-c"])
    running = {"celery@w-a": 2, "celery@w-b": 0, "celery@w-c.worker.svc": 1, "celery@elsewhere": 3}
    annotator = PodCostAnnotator(pods, lambda: running, settings())
    assert run(annotator) == 2
    assert pods.costs() == {"w-a": "2", "w-b": "", "w-c": "1"}  # an idle pod without the annotation is already 0
    assert run(annotator) == 0  # nothing changed: no PATCH
    running["celery@w-a"] = 0
    assert run(annotator) == 1 and pods.costs()["w-a"] == "0"
    assert annotator.patches == 3 and annotator.pods_tracked == 3


def test_terminating_pods_are_left_alone() -> None:
    pods = FakePods(["w-a", "w-b"])
    pods.terminating.add("w-b")
    annotator = PodCostAnnotator(pods, lambda: {"celery@w-a": 1, "celery@w-b": 4}, settings())
    run(annotator)
    assert pods.patched == [("w-a", "1")] and annotator.pods_tracked == 1


def test_nothing_is_patched_while_the_event_stream_does_not_know_who_is_idle() -> None:
    pods = FakePods(["w-a"])
    pods.annotations["w-a"][COST_ANNOTATION] = "3"
    annotator = PodCostAnnotator(pods, lambda: None, settings())
    assert run(annotator) == 0 and pods.lists == 0 and pods.costs() == {"w-a": "3"}


def test_busy_pods_first_and_a_bounded_number_of_patches_a_pass() -> None:
    names = [f"w-{i:02d}" for i in range(30)]
    pods = FakePods(names)
    for name in names[:20]:
        pods.annotations[name][COST_ANNOTATION] = "1"  # were busy, now idle
    running = {f"celery@{name}": 0 for name in names[:20]} | {f"celery@{name}": 2 for name in names[20:]}
    annotator = PodCostAnnotator(pods, lambda: running, settings(max_patches=5))
    assert run(annotator) == 5
    assert {name for name, _ in pods.patched} == set(names[20:25])  # the newly busy ones first
    for _ in range(5):
        run(annotator)
    assert len(pods.patched) == 30 and all(cost in ("0", "2") for cost in pods.costs().values())


def test_a_burst_of_10000_task_events_is_a_bounded_number_of_patches() -> None:
    clock = [1000.0]
    state = EventState(StateConfig(warmup=0.0), clock=lambda: clock[0])
    state.on_connected()
    workers = [f"celery@w-{i}" for i in range(4)]
    for host in workers:
        state.apply({"type": "worker-heartbeat", "hostname": host, "active": 0, "freq": 2.0, "timestamp": 0.0})
    pods = FakePods([f"w-{i}" for i in range(4)])
    annotator = PodCostAnnotator(pods, state.running_by_worker, settings())
    events = 0
    for n in range(5000):  # 5,000 tasks started and ended: 10,000 events, a pass every 100 events (every 5 s)
        host = workers[n % 4]
        state.apply({"type": "task-started", "hostname": host, "uuid": f"t{n}", "name": "x", "timestamp": 1.0})
        state.apply({"type": "task-succeeded", "hostname": host, "uuid": f"t{n - 8}", "timestamp": 1.0})
        events += 2
        if events % 100 == 0:
            run(annotator)
    passes = events // 100
    assert len(pods.patched) <= 4 * passes  # never more than a PATCH per pod and pass
    assert len(pods.patched) <= 8, pods.patched  # each worker stays at 2 running: set once, then unchanged


def test_refused_patches_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    forbidden = KubeAPIError('GET pods: HTTP 403: pods is forbidden: User "system:serviceaccount:x:y"', 403)
    pods = FakePods(["w-a"], fail=forbidden)
    annotator = PodCostAnnotator(pods, lambda: {"celery@w-a": 1}, settings())
    with caplog.at_level(logging.DEBUG, logger="adapter.pod_cost"):
        for _ in range(5):
            assert run(annotator) == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "forbidden" in warnings[0].getMessage()
    assert "get, list, watch and patch on pods in namespace lensing-production" in warnings[0].getMessage()
    assert annotator.failures == {"forbidden": 5}
    pods.fail = KubeAPIError("GET pods: Cannot connect to host", 0)
    run(annotator)
    assert annotator.failures == {"forbidden": 5, "unreachable": 1}
    pods.fail = None
    run(annotator)
    assert pods.patched == [("w-a", "1")]


def test_the_options_are_checked_at_start() -> None:
    with pytest.raises(ConfigError, match="needs --worker-namespace and --worker-pod-selector"):
        settings_of(["--pod-deletion-cost", "--worker-namespace", NS])
    with pytest.raises(ConfigError, match="--worker-pod-selector 'app in lensing'"):
        settings_of(["--pod-deletion-cost", "--worker-namespace", NS, "--worker-pod-selector", "app in lensing"])
    assert settings_of([]) is None
    made = settings_of(["--pod-deletion-cost", "--worker-namespace", NS, "--worker-pod-selector", "app=lensing"])
    assert (
        made is not None
        and made.pod_of("celery@lensing-celery-worker-7d9f-abcde") == "lensing-celery-worker-7d9f-abcde"
    )
    assert made.pod_of("no-at-sign") is None


def test_a_pattern_without_a_pod_group_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        settings_of(["--worker-pod-pattern", "^celery@(.+)$"])
    assert exit_.value.code == 2
    assert "expected a regular expression with a group named pod" in capsys.readouterr().err


def test_its_families_are_the_catalogued_ones() -> None:
    from lensing_core.catalog import ADAPTER

    annotator = PodCostAnnotator(FakePods(["w-a"]), lambda: {"celery@w-a": 1}, settings())
    run(annotator)
    names = {metric.name for metric in annotator.collector().collect()}
    assert names == {name.removesuffix("_total") for name in ADAPTER if "pod_deletion_cost" in name}
