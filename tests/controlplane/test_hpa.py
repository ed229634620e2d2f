"""The platform's HPAs (platform design 1.3, as the chart renders them) driven by the real HPA controller of
kube-controller-manager v1.35, which reads the adapter through the real aggregation layer.

Worker: Deployment lensing-celery-worker (2 replicas), HPA on External celery_queue_length{queue=celery},
AverageValue 10, 2..10, the chart's behaviour with the scale-down stabilization window shortened from 300 s to
5 s and its policy period from 60 s to 3 s (the 25 % stays). Real Celery tasks are sent to a real Redis with no
worker consuming (a deterministic burst), then a real Celery worker (the platform's configuration: early ack,
--concurrency 4) drains them. No kubelet runs: the worker pods stay Pending, which External AverageValue
does not mind (it divides by the Deployment's replica count).

API: Deployment lensing-api (3 replicas), HPA with the Pods metric http_requests_per_second from
custom.metrics.k8s.io (a real Prometheus scraping pretend counters for the pods) next to the platform's CPU and
memory targets. Pods are made Running through the status subresource: the controller ignores Pending pods.

The tests of each HPA run in order and build on the previous one's state (one Deployment, one HPA).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from celery import Celery

from lensing_harness.adapter_process import hpa_desired_replicas
from tests.chart.conftest import CHART, helm
from tests.controlplane.conftest import NAMESPACE, RELEASE, Registration, registered_adapter
from tests.support.controlplane import ControlPlane
from tests.support.services import CeleryWorker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PLATFORM_NS = "lensing-production"
WORKER = "lensing-celery-worker"
API = "lensing-api"
API_HPA = "lensing-api-hpa"
QUEUE = "celery"  # the chart's workerHPA.queue
BURST = 45  # tasks: ceil(45 / 10) = 5 replicas
API_RATES = (1500.0, 1800.0, 2100.0)  # requests per second of the three API pods: 5400 / 1000 -> 6 replicas


def platform_worker_deployment() -> dict[str, Any]:
    """k8s/deployments/celery-worker.yaml of the platform design (1.3), without its Secret/ConfigMap refs."""
    labels = {"app": "lensing", "component": "celery-worker"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WORKER, "namespace": PLATFORM_NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": "lensing-api:latest",
                            "command": [
                                "celery",
                                "-A",
                                "tasks.celery_app",
                                "worker",
                                "--loglevel=info",
                                "--concurrency=4",
                            ],
                            "resources": {
                                "requests": {"memory": "4Gi", "cpu": "2000m", "nvidia.com/gpu": 1},
                                "limits": {"memory": "8Gi", "cpu": "4000m", "nvidia.com/gpu": 1},
                            },
                        }
                    ],
                    "nodeSelector": {"workload": "gpu"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
                    ],
                },
            },
        },
    }


def platform_api_deployment() -> dict[str, Any]:
    """k8s/deployments/api.yaml (1.3): the selector, labels, replicas and resources that the HPA works with."""
    labels = {"app": "lensing", "component": "api"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": API, "namespace": PLATFORM_NS, "labels": {**labels, "version": "v2.0.0"}},
        "spec": {
            "replicas": 3,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "version": "v2.0.0"}},
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "image": "lensing-api:latest",
                            "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                            "resources": {
                                "requests": {"memory": "2Gi", "cpu": "1000m"},
                                "limits": {"memory": "4Gi", "cpu": "2000m"},
                            },
                        }
                    ]
                },
            },
        },
    }


def chart_hpas() -> dict[str, dict[str, Any]]:
    """The chart's two HPAs, rendered for the platform namespace."""
    out = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--set", "broker.url=redis://redis:6379/0",
        "--set", "workerHPA.enabled=true", "--set", f"workerHPA.namespace={PLATFORM_NS}",
        "--set", "apiHPA.enabled=true", "--set", f"apiHPA.namespace={PLATFORM_NS}",
        "-s", "templates/autoscaling/worker-hpa.yaml", "-s", "templates/autoscaling/api-hpa.yaml",
    ).stdout  # fmt: skip
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d}


def shortened(hpa: dict[str, Any]) -> dict[str, Any]:
    """The HPA for a test's time scale: scale-down window 5 s and policy periods 3 s; the rest as rendered."""
    hpa = copy.deepcopy(hpa)
    hpa["metadata"].pop("labels", None)
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 300  # the platform's five minutes
    down["stabilizationWindowSeconds"] = 5
    for policy in down["policies"]:
        policy["periodSeconds"] = 3
    return hpa


@dataclass
class Platform:
    plane: ControlPlane
    reg: Registration
    hpas: dict[str, dict[str, Any]]

    def replicas(self, name: str) -> int:
        return int(
            self.plane.get(f"/apis/apps/v1/namespaces/{PLATFORM_NS}/deployments/{name}").body["spec"]["replicas"]
        )

    def hpa(self, name: str) -> dict[str, Any]:
        reply = self.plane.get(f"/apis/autoscaling/v2/namespaces/{PLATFORM_NS}/horizontalpodautoscalers/{name}")
        assert reply.status == 200, reply.body
        return reply.body  # type: ignore[no-any-return]

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        for condition in self.hpa(name).get("status", {}).get("conditions", []):
            if condition["type"] == kind:
                return condition  # type: ignore[no-any-return]
        return {}

    def rescales(self, name: str) -> list[int]:
        """The sizes of the controller's SuccessfulRescale events for ``name``, oldest first."""
        events = self.plane.get(
            f"/api/v1/namespaces/{PLATFORM_NS}/events?fieldSelector=involvedObject.name%3D{name},reason%3DSuccessfulRescale"
        ).body["items"]
        events.sort(
            key=lambda e: (e.get("firstTimestamp") or e["metadata"]["creationTimestamp"], e["metadata"]["name"])
        )
        return [int(re.match(r"New size: (\d+);", e["message"]).group(1)) for e in events]  # type: ignore[union-attr]

    def wait_replicas(self, name: str, count: int, timeout: float = 60, hpa: str = "") -> None:
        wait_for(
            lambda: self.replicas(name) == count,
            timeout=timeout,
            interval=0.5,
            what=f"{name} at {count} replicas (HPA status: {json.dumps(self.hpa(hpa or name).get('status'))[:2500]})",
        )


@pytest.fixture(scope="module")
def platform(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # the broker keeps its data across a restart (an outage is not a flush): save on shutdown
    with registered_adapter(
        control_plane, tmp_path_factory.mktemp("hpa"), [QUEUE], broker_args=("--save", "3600 1")
    ) as reg:
        control_plane.ensure_namespace(PLATFORM_NS)
        hpas = chart_hpas()
        platform = Platform(control_plane, reg, hpas)
        try:
            yield platform
        finally:
            for kind, name in (("hpa", WORKER), ("hpa", API_HPA), ("deployment", WORKER), ("deployment", API)):
                control_plane.kubectl("delete", kind, name, "-n", PLATFORM_NS, "--ignore-not-found", check=False)
            # no garbage collector runs in the suite's controller manager: the ReplicaSets and pods go by label
            for component in ("celery-worker", "api"):
                control_plane.kubectl(
                    "delete", "replicasets,pods", "-l", f"app=lensing,component={component}", "-n", PLATFORM_NS,
                    "--ignore-not-found", check=False,
                )  # fmt: skip


def send_burst(broker_url: str, count: int) -> None:
    app = Celery("burst", broker=broker_url)
    try:
        for n in range(count):
            app.send_task("lensing.analyse_lens", args=[n, 0.2], queue=QUEUE)
    finally:
        app.close()


# ---- the worker HPA -------------------------------------------------------------------------------------------


def test_worker_hpa_at_rest_holds_the_minimum(platform: Platform) -> None:
    rendered = platform.hpas[WORKER]
    external = rendered["spec"]["metrics"][0]["external"]
    assert external["metric"] == {"name": "celery_queue_length", "selector": {"matchLabels": {"queue": QUEUE}}}
    assert external["target"] == {"type": "AverageValue", "averageValue": "10"}
    assert (rendered["spec"]["minReplicas"], rendered["spec"]["maxReplicas"]) == (2, 10)
    platform.plane.apply([platform_worker_deployment(), shortened(rendered)])
    wait_for(
        lambda: platform.condition(WORKER, "ScalingActive").get("status") == "True",
        timeout=60,
        interval=0.5,
        what=f"ScalingActive (status: {platform.hpa(WORKER).get('status')})",
    )
    status = platform.hpa(WORKER)["status"]
    assert status["currentMetrics"][0]["external"]["current"]["averageValue"] == "0"
    assert platform.replicas(WORKER) == 2 and status["desiredReplicas"] == 2


def test_a_burst_scales_the_workers_out(platform: Platform) -> None:
    send_burst(platform.reg.broker.url, BURST)
    platform.wait_replicas(WORKER, 5)  # the controller: ceil(45 / 10)
    status = platform.hpa(WORKER)["status"]
    wait_for(
        lambda: platform.hpa(WORKER)["status"]["currentMetrics"][0]["external"]["current"]["averageValue"] == "9",
        timeout=30,
        interval=0.5,
        what="45 / 5 per replica",
    )
    status = platform.hpa(WORKER)["status"]
    assert status["desiredReplicas"] == 5
    assert platform.rescales(WORKER) == [5]
    # the demo's copy of the controller's arithmetic agrees with the controller
    assert hpa_desired_replicas(2, BURST) == 5
    # pods stay Pending (no kubelet); the Deployment still counts five
    pods = platform.plane.get(f"/api/v1/namespaces/{PLATFORM_NS}/pods?labelSelector=component%3Dcelery-worker").body
    assert {p["status"]["phase"] for p in pods["items"]} == {"Pending"}
    wait_for(
        lambda: (
            len(
                platform.plane.get(
                    f"/api/v1/namespaces/{PLATFORM_NS}/pods?labelSelector=component%3Dcelery-worker"
                ).body["items"]
            )
            == 5
        ),
        timeout=30,
        interval=0.5,
        what="five worker pods",
    )


def test_a_broker_outage_leaves_the_replicas_alone(platform: Platform) -> None:
    platform.reg.broker.stop()
    try:
        # the adapter answers 503 once its last good read is older than --max-staleness (3 s here) ...
        wait_for(
            lambda: platform.condition(WORKER, "ScalingActive").get("status") == "False",
            timeout=60,
            interval=0.5,
            what="ScalingActive False",
        )
        condition = platform.condition(WORKER, "ScalingActive")
        assert condition["reason"] == "FailedGetExternalMetric", condition
        assert "unable to get external metric" in condition["message"], condition
        through = platform.plane.get(
            f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{PLATFORM_NS}/celery_queue_length?labelSelector=queue%3D{QUEUE}"
        )
        assert through.status == 503, through.body  # the adapter's answer, passed on by the aggregator
        # ... and the controller keeps the five replicas (a 0 read as a value would scale in within the 5 s window)
        until = time.monotonic() + 10
        while time.monotonic() < until:
            assert platform.replicas(WORKER) == 5
            time.sleep(0.5)
        assert platform.rescales(WORKER) == [5]
    finally:
        platform.reg.broker.start()
    wait_for(
        lambda: platform.condition(WORKER, "ScalingActive").get("status") == "True",
        timeout=60,
        interval=0.5,
        what="ScalingActive True again",
    )
    assert platform.replicas(WORKER) == 5  # 45 waiting again: 9 per replica, inside the tolerance


def test_a_real_worker_drains_the_queue_and_the_workers_scale_in(platform: Platform) -> None:
    worker = CeleryWorker(platform.reg.broker.url, (QUEUE,), concurrency=4, acks_late=False)
    try:
        platform.wait_replicas(WORKER, 2, timeout=120)
    finally:
        worker.stop()
    # down in steps (the queue drains over several syncs), each within the 25 % policy: int(n x 0.75) at least
    sizes = platform.rescales(WORKER)
    assert sizes[0] == 5 and sizes[-1] == 2 and len(sizes) >= 3, sizes  # 5 -> 2 at once would break the policy
    for before, after in itertools.pairwise(sizes):
        assert int(before * 0.75) <= after < before, sizes
    status = platform.hpa(WORKER)["status"]
    assert status["currentMetrics"][0]["external"]["current"]["averageValue"] == "0"


# ---- the API HPA ----------------------------------------------------------------------------------------------


def make_running(plane: ControlPlane, pod: dict[str, Any]) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {
        "status": {
            "phase": "Running",
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
        }
    }
    reply = plane.request("PATCH", f"/api/v1/namespaces/{PLATFORM_NS}/pods/{pod['metadata']['name']}/status", status)
    assert reply.status == 200, reply.body


def test_the_api_hpa_scales_on_requests_per_second(platform: Platform) -> None:
    rendered = platform.hpas[API_HPA]
    kinds = [m["type"] for m in rendered["spec"]["metrics"]]
    assert kinds == ["Resource", "Resource", "Pods"]  # cpu 70 %, memory 80 %, http_requests_per_second 1000
    platform.plane.apply(platform_api_deployment())
    selector = "app%3Dlensing,component%3Dapi"

    def api_pods() -> list[dict[str, Any]]:
        return list(platform.plane.get(f"/api/v1/namespaces/{PLATFORM_NS}/pods?labelSelector={selector}").body["items"])

    wait_for(lambda: len(api_pods()) == 3, timeout=30, interval=0.3, what="three API pods")
    pods = sorted(api_pods(), key=lambda p: p["metadata"]["name"])
    for pod in pods:
        make_running(platform.plane, pod)
    platform.reg.requests.rates.update(
        {(PLATFORM_NS, pod["metadata"]["name"]): rate for pod, rate in zip(pods, API_RATES, strict=True)}
    )
    platform.plane.apply(shortened(rendered))
    # the controller asks custom.metrics.k8s.io for the pods of the Deployment's selector: 5400 in all, 1800 a
    # pod against 1000 -> ceil(3 x 1.8) = 6, within the scale-up policy (100 % or 4 pods per 15 s)
    platform.wait_replicas(API, 6, timeout=90, hpa=API_HPA)
    status = platform.hpa(API_HPA)["status"]
    (pods_metric,) = [m for m in status["currentMetrics"] if m["type"] == "Pods"]
    assert pods_metric["pods"]["metric"]["name"] == "http_requests_per_second"
    assert platform.rescales(API_HPA) == [6]
    # without metrics-server the CPU and memory targets cannot be read: the controller scales up on the metric it
    # has, and would refuse to scale down on a partial picture
    condition = platform.condition(API_HPA, "ScalingActive")
    assert condition["status"] == "True", condition
