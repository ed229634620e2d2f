"""Idle workers go first (issue 13) on the real control plane: the real HPA controller scales the worker Deployment
on celery_queue_workers_needed (AverageValue 1, the chart's ci/idle-first-values.yaml), and the real ReplicaSet
controller picks which pods to delete by the pod-deletion-cost the adapter keeps on them (--pod-deletion-cost,
its arguments and Role from the same chart render, the adapter acting as the chart's ServiceAccount).

Four worker pods, made Running and Ready through the status subresource (no kubelet), whose names are the hostnames
of four real Celery workers (the platform's configuration: --concurrency 4, early ack) on a real Redis, two of them
busy with a long task each. The HPA asks for exactly the two busy workers; the two pods the ReplicaSet deletes are
the idle ones, and the busy workers finish their tasks. Then RBAC is taken away: one clear log line, failures
counted, and the metrics served all along.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import yaml
from celery import Celery

from adapter.pod_cost import COST_ANNOTATION
from tests.chart.conftest import CHART, ci_values, helm
from tests.controlplane.conftest import NAMESPACE, RELEASE, Registration, items_of, raw_path, registered_adapter
from tests.controlplane.test_hpa import PLATFORM_NS, WORKER, make_running, platform_worker_deployment, shortened
from tests.support.controlplane import ControlPlane
from tests.support.services import CeleryWorker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

QUEUE = "celery"
SELECTOR = "app%3Dlensing,component%3Dcelery-worker"
LONG_TASK = 60.0  # seconds: outlasts the placement and the scale-down (two 3 s periods after a 5 s window)


@dataclass
class IdleFirst:
    plane: ControlPlane
    reg: Registration
    workers: dict[str, CeleryWorker] = field(default_factory=dict)  # pod name -> its Celery worker

    def pods(self) -> list[dict[str, Any]]:
        items = self.plane.get(f"/api/v1/namespaces/{PLATFORM_NS}/pods?labelSelector={SELECTOR}").body["items"]
        return sorted(items, key=lambda p: p["metadata"]["name"])

    def costs(self) -> dict[str, str]:
        return {
            p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(COST_ANNOTATION, "")
            for p in self.pods()
        }

    def replicas(self) -> int:
        return int(
            self.plane.get(f"/apis/apps/v1/namespaces/{PLATFORM_NS}/deployments/{WORKER}").body["spec"]["replicas"]
        )

    def diagnosis(self) -> str:
        """What the adapter says about the pod deletion cost, for a failure message."""
        metrics = [
            line
            for line in self.reg.adapter_metrics().splitlines()
            if "pod_deletion_cost" in line or "pod-deletion-cost" in line
        ]
        log = [line for line in self.reg.adapter.output().splitlines() if "pod" in line.lower()][-10:]
        return f"costs {self.costs()}; adapter metrics {metrics}; adapter log {log}"

    def needed(self) -> tuple[int, Any]:
        reply = self.plane.get(raw_path(PLATFORM_NS, "celery_queue_workers_needed", f"queue={QUEUE}"))
        return reply.status, reply.body


def worker_hpa() -> dict[str, Any]:
    """The chart's worker HPA from ci/idle-first-values.yaml (celery_queue_workers_needed, AverageValue 1)."""
    out = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", "broker.url=redis://redis:6379/0",
        "-f", str(ci_values("idle-first")), "-s", "templates/autoscaling/worker-hpa.yaml",
    ).stdout  # fmt: skip
    (hpa,) = [d for d in yaml.safe_load_all(out) if d]
    return hpa  # type: ignore[no-any-return]


def remove_worker_objects(plane: ControlPlane) -> None:
    """The worker HPA and Deployment, and their ReplicaSets and pods by label: no garbage collector runs in the
    suite's controller manager, so a deleted Deployment leaves them behind (and an identical one adopts them)."""
    for kind, name in (("hpa", WORKER), ("deployment", WORKER)):
        plane.kubectl("delete", kind, name, "-n", PLATFORM_NS, "--ignore-not-found", check=False)
    labels = "app=lensing,component=celery-worker"
    plane.kubectl("delete", "replicasets,pods", "-l", labels, "-n", PLATFORM_NS, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def idle_first(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdleFirst]:
    control_plane.ensure_namespace(PLATFORM_NS)  # the chart's pod-deletion-cost Role lives there
    remove_worker_objects(control_plane)  # whatever an earlier test left there
    with registered_adapter(
        control_plane,
        tmp_path_factory.mktemp("idle-first"),
        [QUEUE],
        chart_values=[str(ci_values("idle-first"))],
        chart_args=("--pod-deletion-cost", "--worker-", "--pod-deletion-cost-"),
        adapter_args=["--pod-deletion-cost-interval=0.5"],  # the chart's 5 s, shortened for the test
    ) as reg:
        state = IdleFirst(control_plane, reg)
        try:
            yield state
        finally:
            for worker in state.workers.values():
                worker.kill()
            remove_worker_objects(control_plane)


def test_the_hpa_on_workers_needed_deletes_the_idle_workers_and_keeps_the_busy_ones(idle_first: IdleFirst) -> None:
    plane = idle_first.plane
    deployment = platform_worker_deployment()
    deployment["spec"]["replicas"] = 4
    plane.apply(deployment)
    wait_for(lambda: len(idle_first.pods()) == 4, timeout=30, interval=0.3, what="four worker pods")
    for pod in idle_first.pods():
        make_running(plane, pod)
        name = pod["metadata"]["name"]
        # a pod's hostname is its name: Celery's default node name in that pod is celery@<pod name>
        idle_first.workers[name] = CeleryWorker(
            idle_first.reg.broker.url, (QUEUE,), concurrency=4, events=True, hostname=f"celery@{name}"
        )
    # the four workers known to the adapter's event stream with their pool sizes: nothing to do, 0 needed
    wait_for(
        lambda: (r := idle_first.needed())[0] == 200 and items_of(r[1])[0]["value"] == "0",
        timeout=90, interval=0.5, what=f"celery_queue_workers_needed 0 (last: {idle_first.needed()})",
    )  # fmt: skip

    # two long analyses on two workers: the first, then (its worker told to take no more from the queue, as its
    # prefetch would let it) the second
    counter = f"unfinished-{uuid.uuid4().hex[:8]}"
    store = redis.Redis.from_url(idle_first.reg.broker.url)
    store.set(counter, 2)
    app = Celery("producer", broker=idle_first.reg.broker.url)
    app.conf.task_send_sent_event = True  # the task's queue is then known from its task-sent event

    def busy_pods(count: int) -> dict[str, str] | None:
        costs = idle_first.costs()
        return costs if sorted(costs.values()) == sorted(["1"] * count + [""] * (4 - count)) else None

    def wait_busy(count: int) -> dict[str, str]:
        try:
            return wait_for(lambda: busy_pods(count), timeout=60, interval=0.3, what=f"{count} pod(s) at cost 1")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {idle_first.diagnosis()}") from None

    app.send_task("lensing.tracked", args=[counter, LONG_TASK], queue=QUEUE)
    (first,) = [name for name, cost in wait_busy(1).items() if cost == "1"]
    replies = app.control.cancel_consumer(QUEUE, destination=[f"celery@{first}"], reply=True, timeout=10)
    assert replies and "ok" in next(iter(replies[0].values())), replies
    app.send_task("lensing.tracked", args=[counter, LONG_TASK], queue=QUEUE)
    costs = wait_busy(2)
    app.control.add_consumer(QUEUE, destination=[f"celery@{first}"], reply=True, timeout=10)
    app.close()
    busy = {name for name, cost in costs.items() if cost == "1"}
    # ceil(2 / 4) = 1, but two workers are busy (the value can lag the annotation by a broker poll)
    wait_for(
        lambda: (r := idle_first.needed())[0] == 200 and items_of(r[1])[0]["value"] == "2",
        timeout=15, interval=0.3, what=f"celery_queue_workers_needed 2 (last: {idle_first.needed()})",
    )  # fmt: skip

    plane.apply(shortened(worker_hpa()))
    # the controller: 2 / 1 per replica -> 2 (4 -> 3 -> 2 within the 25 % policy); the ReplicaSet deletes the
    # lowest pod-deletion-cost first: the idle pods
    wait_for(lambda: idle_first.replicas() == 2, timeout=60, interval=0.5, what="the Deployment at 2 replicas")
    wait_for(lambda: len(idle_first.pods()) == 2, timeout=30, interval=0.3, what="two pods left")
    left = {p["metadata"]["name"] for p in idle_first.pods()}
    assert left == busy, f"the ReplicaSet deleted a busy worker: kept {sorted(left)}, busy {sorted(busy)}"
    for name in set(idle_first.workers) - left:  # what the kubelet would do: stop the deleted pods' workers
        idle_first.workers.pop(name).stop()

    # the busy workers finish their analyses; the queue then needs no worker (the HPA keeps its minimum 2)
    wait_for(lambda: int(store.get(counter) or 0) == 0, timeout=LONG_TASK + 30, interval=0.5, what="both tasks done")
    wait_for(lambda: sorted(idle_first.costs().values()) == ["0", "0"], timeout=20, interval=0.3, what="costs 0")
    assert idle_first.replicas() == 2
    store.close()


def test_rbac_denied_is_one_clear_log_line_and_the_metrics_are_served(idle_first: IdleFirst) -> None:
    reg, plane = idle_first.reg, idle_first.plane
    (binding,) = [o for o in reg.objects if o["kind"] == "RoleBinding" and o["metadata"]["name"].endswith("-cost")]
    forbidden_before = reg.metric_value("lensing_adapter_pod_deletion_cost_failures_total", reason="forbidden")
    patches_before = reg.metric_value("lensing_adapter_pod_deletion_cost_patches_total")
    plane.kubectl("delete", "rolebinding", binding["metadata"]["name"], "-n", PLATFORM_NS)
    pod = idle_first.pods()[0]["metadata"]["name"]
    try:
        # a cost the adapter must correct, now that it may no longer patch (the chart's cluster-wide pod-reader,
        # for custom metrics, still lets it list)
        wrong = plane.request(
            "PATCH",
            f"/api/v1/namespaces/{PLATFORM_NS}/pods/{pod}",
            {"metadata": {"annotations": {COST_ANNOTATION: "7"}}},
        )
        assert wrong.status == 200, wrong.body
        wait_for(
            lambda: reg.metric_value("lensing_adapter_pod_deletion_cost_failures_total", reason="forbidden")
            >= forbidden_before + 3,
            timeout=30, interval=0.5, what="forbidden PATCHes counted",
        )  # fmt: skip
        status, body = idle_first.needed()
        assert status == 200, body  # the metrics are unaffected
        lines = [
            line for line in reg.adapter.output().splitlines() if "pod deletion cost" in line and "forbidden" in line
        ]
        assert len(lines) == 1, lines
        assert f"get, list, watch and patch on pods in namespace {PLATFORM_NS}" in lines[0]
        assert reg.adapter.process.poll() is None
        assert idle_first.costs()[pod] == "7"
    finally:
        plane.apply(binding)
    # RBAC back (the authorizer follows RoleBindings within a moment): the next passes set the cost right again
    wait_for(lambda: idle_first.costs()[pod] == "0", timeout=30, interval=0.5, what="the cost repaired")
    assert reg.metric_value("lensing_adapter_pod_deletion_cost_patches_total") > patches_before
