"""--pod-deletion-cost with the Kubernetes API unreachable (a fault the suite's real API server cannot be made to
have on demand while other tests use it): the failures are counted, one warning is logged, and the adapter's
metrics are served all along. On the real API server (patches, RBAC denied): tests/controlplane/test_idle_first.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery import Celery

from lensing_harness.kubeconfig import write_kubeconfig
from lensing_harness.ports import free_port
from tests.adapter.conftest import VALUES
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

NEEDED = f"{VALUES}/default/celery_queue_workers_needed?labelSelector=queue%3Danalyses"


def unreachable_failures(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('lensing_adapter_pod_deletion_cost_failures_total{reason="unreachable"} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_unreachable_api_server_is_counted_and_the_metrics_are_served(  # type: ignore[no-untyped-def]
    redis_url: str, adapter_factory, client_factory, tmp_path: Path
) -> None:
    Celery("producer", broker=redis_url).send_task("lensing.analyse_lens", args=[1], queue="analyses")
    nowhere = write_kubeconfig(tmp_path / "nowhere.kubeconfig", f"https://127.0.0.1:{free_port()}", {"token": "x"})
    adapter = adapter_factory(
        ["--broker-url", redis_url, "--poll-interval", "0.2"],
        "--pod-deletion-cost",
        "--worker-namespace=lensing-production",
        "--worker-pod-selector=app=lensing,component=celery-worker",
        "--pod-deletion-cost-interval=0.2",
        f"--lister-kubeconfig={nowhere}",
    )
    client = client_factory(adapter)
    wait_for(lambda: unreachable_failures(client.get("/metrics").body.decode()) >= 5, 30, what="failures counted")
    # the metrics are unaffected: one task waits, no worker consumes the queue (its workers needed is not known)
    length = client.get(f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses")
    assert length.status == 200 and length.json()["items"][0]["value"] == "1"
    needed = client.get(NEEDED)
    assert needed.status == 503 and "no live worker consumes the queue" in needed.json()["message"], needed.body
    assert client.get("/readyz").status == 200
    time.sleep(0.5)
    warnings = [line for line in adapter.output().splitlines() if "pod deletion cost: cannot" in line]
    assert len(warnings) == 1 and "cannot list pods in namespace lensing-production" in warnings[0], warnings
    assert adapter.process.poll() is None
