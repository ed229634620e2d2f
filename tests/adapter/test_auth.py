"""Authorization when there is no API server to ask, and when the one there is fails: a SubjectAccessReview
endpoint that errors, answers garbage or hangs (a Kubernetes API faulty on demand). TokenReview,
SubjectAccessReview, their caches and the client CAs of the extension-apiserver-authentication ConfigMap are
tested against the real kube-apiserver in tests/controlplane/test_aggregation.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adapter.conftest import VALUES
from tests.adapter.faulty_kube_api import FaultyKubeAPI, ReviewFault
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

LENGTH = f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses"


@pytest.fixture
def faulty() -> Iterator[FaultyKubeAPI]:
    server = FaultyKubeAPI().start()
    yield server
    server.stop()


def test_no_cluster_means_only_always_allowed(redis_url: str, adapter_factory, client_factory) -> None:  # type: ignore[no-untyped-def]
    adapter = adapter_factory(["--broker-url", redis_url, "--queue", "analyses"])
    member = client_factory(adapter, adapter.client_ca.issue("carol", ["developers"]))
    reply = member.get(LENGTH)
    assert reply.status == 403
    assert reply.json()["details"] == {"group": "external.metrics.k8s.io", "kind": "celery_queue_length"}
    # system:masters is allowed without asking: the (empty) queue's value
    wait_for(lambda: client_factory(adapter).get(LENGTH).status == 200, 30, what="the first broker read")
    assert client_factory(adapter).get(LENGTH).json()["items"][0]["value"] == "0"


@pytest.mark.parametrize("fault", ["error", "garbage", "hang"])
def test_a_failing_access_review_is_503_never_a_guess(  # type: ignore[no-untyped-def]
    fault: ReviewFault, redis_url: str, faulty: FaultyKubeAPI, adapter_factory, client_factory, tmp_path: Path
) -> None:
    faulty.review_fault = fault
    adapter = adapter_factory(
        ["--broker-url", redis_url, "--queue", "analyses"],
        "--authorization-kubeconfig",
        str(faulty.kubeconfig(tmp_path / "faulty.kubeconfig")),
    )
    wait_for(lambda: client_factory(adapter).get(LENGTH).status == 200, 30, what="the first broker read")
    member = client_factory(adapter, adapter.client_ca.issue("carol", ["developers"]))
    started = time.monotonic()
    reply = member.get(LENGTH)
    assert reply.status == 503, reply.body
    assert reply.json()["reason"] == "ServiceUnavailable" and "authorization is unavailable" in reply.json()["message"]
    assert "Retry-After" not in reply.headers
    assert time.monotonic() - started < 15  # a hanging review ends at the client's 10 s timeout
    assert faulty.access_reviews >= 1
    if fault != "hang":  # a failure is not cached: the next request asks again
        before = faulty.access_reviews
        assert member.get(LENGTH).status == 503
        assert faulty.access_reviews > before
    assert client_factory(adapter, anonymous=True).get("/healthz").status == 200
