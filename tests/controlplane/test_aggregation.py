"""The adapter behind the real aggregation layer of kube-apiserver v1.35: availability, discovery, values read
from a real Redis through the API server, front-proxy authentication with the settings the API server writes
into kube-system/extension-apiserver-authentication, delegated TokenReview and SubjectAccessReview, RBAC
through the aggregator, and a front-proxy CA rotation the adapter follows."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from adapter.pki import CertificateAuthority, Issued
from tests.controlplane.conftest import (
    NAMESPACE,
    Registration,
    apiservice_condition,
    items_of,
    raw_path,
    registered_adapter,
)
from tests.support.controlplane import FRONT_PROXY_CN, HPA_SERVICE_ACCOUNT, ControlPlane
from tests.support.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

QUEUES = ("analyses", "bulk")
WAITING = {"analyses": 7, "bulk": 3}
LENGTH = raw_path("default", "celery_queue_length", "queue=analyses")
BACKLOG = raw_path("default", "celery_queue_backlog", "queue=analyses")
READER_NAMESPACE = "metrics-readers"


@pytest.fixture(scope="module")
def reg(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registration]:
    with registered_adapter(control_plane, tmp_path_factory.mktemp("aggregation"), QUEUES) as registration:
        client = redis.Redis.from_url(registration.broker.url)
        for queue, count in WAITING.items():
            client.lpush(queue, *[json.dumps({"n": n}) for n in range(count)])
        client.close()

        def read() -> bool:
            reply = registration.plane.get(raw_path("default", "celery_queue_length"))
            return reply.status == 200 and {i["metricLabels"]["queue"]: i["value"] for i in reply.body["items"]} == {
                q: str(n) for q, n in WAITING.items()
            }

        wait_for(read, timeout=30, interval=0.3, what="the adapter's first read of the pushed messages")
        yield registration


def direct(
    reg: Registration, path: str, *, cert: Issued | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """A request straight to the adapter (not through the API server), as the given client certificate."""
    context = ssl.create_default_context(cadata=reg.serving_ca.cert_pem.decode())
    if cert is not None:
        d = reg.workdir / "direct-clients"
        name = str(abs(hash(cert.cert_pem)))
        cert.write(d / f"{name}.crt", d / f"{name}.key")
        context.load_cert_chain(str(d / f"{name}.crt"), str(d / f"{name}.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", reg.adapter.port, context=context, timeout=15)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body.startswith(b"{") else body.decode(errors="replace")
    finally:
        conn.close()


def the_aggregators_cert(plane: ControlPlane) -> Issued:
    """The client certificate kube-apiserver presents as a front proxy (its --proxy-client-cert-file)."""
    return Issued(
        (plane.pki / "front-proxy-client.crt").read_bytes(), (plane.pki / "front-proxy-client.key").read_bytes()
    )


def test_the_apiservices_are_available_with_a_ca_bundle(reg: Registration) -> None:
    names = set(reg.apiservices)
    assert names == {
        "v1beta1.external.metrics.k8s.io",
        "v1beta2.custom.metrics.k8s.io",
        "v1beta1.custom.metrics.k8s.io",
    }
    for name in names:
        condition = apiservice_condition(reg.plane, name)
        assert (condition["status"], condition["reason"]) == ("True", "Passed"), condition
        spec = reg.plane.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{name}").body["spec"]
        assert "insecureSkipTLSVerify" not in spec
        assert spec["service"] == {
            "name": reg.service["metadata"]["name"],
            "namespace": NAMESPACE,
            "port": reg.adapter.port,
        }
    service = reg.plane.get(f"/api/v1/namespaces/{NAMESPACE}/services/{reg.service['metadata']['name']}").body
    assert service["spec"]["type"] == "ExternalName" and service["spec"]["externalName"] == "localhost"


def test_values_from_redis_through_kube_apiserver(reg: Registration) -> None:
    before = reg.metric_value("lensing_adapter_authentication_total", method="front-proxy", result="success")
    done = reg.plane.kubectl("get", "--raw", LENGTH)
    items = items_of(json.loads(done.stdout))
    assert [(i["metricName"], i["metricLabels"], i["value"]) for i in items] == [
        ("celery_queue_length", {"queue": "analyses"}, "7")
    ]
    every = items_of(json.loads(reg.plane.kubectl("get", "--raw", raw_path("default", "celery_queue_length")).stdout))
    assert {i["metricLabels"]["queue"]: i["value"] for i in every} == {"analyses": "7", "bulk": "3"}
    # the Redis list is the source: one more message, one more in the answer
    client = redis.Redis.from_url(reg.broker.url)
    client.lpush("analyses", json.dumps({"n": 99}))
    client.close()
    wait_for(
        lambda: items_of(json.loads(reg.plane.kubectl("get", "--raw", LENGTH).stdout))[0]["value"] == "8",
        timeout=15, interval=0.3, what="8 waiting in analyses",
    )  # fmt: skip
    client = redis.Redis.from_url(reg.broker.url)
    client.rpop("analyses")
    client.close()
    wait_for(lambda: items_of(reg.plane.get(LENGTH).body)[0]["value"] == "7", timeout=15, interval=0.3, what="7 again")
    # the aggregator came as a front proxy: its certificate, the user in X-Remote-User
    assert reg.metric_value("lensing_adapter_authentication_total", method="front-proxy", result="success") > before


def test_discovery_lists_the_metrics(reg: Registration, tmp_path: Path) -> None:
    cache = ["--cache-dir", str(tmp_path / "kubectl-cache")]
    external = reg.plane.kubectl("api-resources", *cache, "--api-group=external.metrics.k8s.io", "-o", "name")
    assert set(external.stdout.split()) == {
        "celery_queue_length.external.metrics.k8s.io",
        "celery_queue_backlog.external.metrics.k8s.io",
        "celery_queue_workers_needed.external.metrics.k8s.io",
        "api_requests_per_second.external.metrics.k8s.io",  # the config file's PromQL rule
    }
    # custom metrics are named pods/<metric>: kubectl api-resources skips names with a "/" (subresources), so
    # the group's discovery document through the aggregator
    custom = reg.plane.get("/apis/custom.metrics.k8s.io/v1beta2").body
    assert {"pods/http_requests_per_second", "namespaces/http_requests_per_second"} <= {
        r["name"] for r in custom["resources"]
    }, custom
    versions = reg.plane.get("/apis/custom.metrics.k8s.io").body
    assert versions["preferredVersion"]["version"] == "v1beta2"  # the chart's versionPriority


def test_front_proxy_settings_come_from_the_real_configmap(reg: Registration) -> None:
    data = reg.plane.get("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication").body["data"]
    assert json.loads(data["requestheader-allowed-names"]) == [FRONT_PROXY_CN]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(data["requestheader-group-headers"]) == ["X-Remote-Group"]
    assert json.loads(data["requestheader-extra-headers-prefix"]) == ["X-Remote-Extra-"]
    assert data["requestheader-client-ca-file"].strip() == reg.plane.front_proxy_ca.cert_pem.decode().strip()
    assert data["client-ca-file"].strip() == reg.plane.client_ca.cert_pem.decode().strip()
    log = reg.adapter.output()
    assert f"allowed names {FRONT_PROXY_CN}" in log, log[-2000:]
    # the aggregator's own certificate and headers, sent straight to the adapter: accepted as that user
    status, body = direct(
        reg,
        LENGTH,
        cert=the_aggregators_cert(reg.plane),
        headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
    )
    assert status == 200 and items_of(body)[0]["value"] == "7"
    # the aggregator fetches /openapi/v2 as the bare user system:aggregator: allowed by system:discovery (bound to
    # system:authenticated, which every authenticated user is in), then 404, which it reads as "no spec"
    status, body = direct(
        reg, "/openapi/v2", cert=the_aggregators_cert(reg.plane), headers={"X-Remote-User": "system:aggregator"}
    )
    assert status == 404, body
    # a certificate of the same front-proxy CA with a name the ConfigMap does not allow: not a front proxy
    impostor = reg.plane.front_proxy_ca.issue("not-the-aggregator")
    status, body = direct(
        reg, LENGTH, cert=impostor, headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
    )
    assert status == 401, body
    # a client certificate of the cluster's client CA (from the ConfigMap too): user CN, groups O
    status, body = direct(reg, LENGTH, cert=reg.plane.client_ca.issue("someone", ["system:masters"]))
    assert status == 200, body


def test_rbac_through_the_aggregator(reg: Registration) -> None:
    plane = reg.plane
    plane.ensure_namespace(READER_NAMESPACE)
    path = raw_path(READER_NAMESPACE, "celery_queue_length", "queue=analyses")
    alice = plane.user_kubeconfig("alice")  # no RBAC at all
    denied = plane.kubectl("get", "--raw", path, kubeconfig=alice, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
    assert 'cannot list resource "celery_queue_length" in API group "external.metrics.k8s.io"' in denied.stderr

    plane.apply(
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "queue-length-reader", "namespace": READER_NAMESPACE},
                "rules": [
                    {
                        "apiGroups": ["external.metrics.k8s.io"],
                        "resources": ["celery_queue_length"],
                        "verbs": ["get", "list"],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "bob-reads-queue-length", "namespace": READER_NAMESPACE},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "queue-length-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
            },
        ]
    )
    bob = plane.user_kubeconfig("bob")
    allowed_before = reg.metric_value("lensing_adapter_authorization_total", decision="allow", source="webhook")

    def bob_reads() -> bool:
        done = plane.kubectl("get", "--raw", path, kubeconfig=bob, check=False)
        return done.returncode == 0 and items_of(json.loads(done.stdout))[0]["value"] == "7"

    wait_for(bob_reads, timeout=20, interval=0.5, what="bob reads celery_queue_length through the aggregator")
    # the adapter asked the real API server (SubjectAccessReview) and was told yes
    assert reg.metric_value("lensing_adapter_authorization_total", decision="allow", source="webhook") > allowed_before
    # the Role names one metric: the backlog stays forbidden
    other = plane.kubectl(
        "get",
        "--raw",
        raw_path(READER_NAMESPACE, "celery_queue_backlog", "queue=analyses"),
        kubeconfig=bob,
        check=False,
    )
    assert other.returncode != 0 and "Forbidden" in other.stderr

    # the HPA controller's identity: kube-controller-manager's service account for it, and the chart's binding
    hpa = plane.kubectl("get", "--raw", path, f"--as={HPA_SERVICE_ACCOUNT}", "--as-group=system:serviceaccounts")
    assert items_of(json.loads(hpa.stdout))[0]["value"] == "7"
    (binding,) = [
        o
        for o in reg.objects
        if o["kind"] == "ClusterRoleBinding" and o["metadata"]["name"].endswith(":hpa-controller")
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}
    ]

    # the API server forwards only what it allowed; the adapter's own SubjectAccessReview denies the same user
    # when asked directly with the aggregator's certificate and alice's name in the headers
    denied_before = reg.metric_value("lensing_adapter_authorization_total", decision="deny", source="webhook")
    status, body = direct(reg, path, cert=the_aggregators_cert(plane), headers={"X-Remote-User": "alice"})
    assert status == 403 and body["reason"] == "Forbidden", body
    assert (
        reg.metric_value("lensing_adapter_authorization_total", decision="deny", source="webhook") == denied_before + 1
    )


def test_token_review_and_cached_decisions_against_the_real_api_server(reg: Registration) -> None:
    """A bearer token goes to the real TokenReview; the answers are cached for the TTLs (10 s by default):
    a deleted ServiceAccount's token still works until its TokenReview answer expires, then gets 401."""
    plane = reg.plane
    plane.ensure_namespace(READER_NAMESPACE)
    plane.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "dashboard", "namespace": READER_NAMESPACE},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "dashboard-reads-metrics", "namespace": READER_NAMESPACE},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "lm-lensing-metrics-adapter:metrics-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "dashboard", "namespace": READER_NAMESPACE}],
            },
        ]
    )
    token = plane.service_account_token(READER_NAMESPACE, "dashboard")
    path = raw_path(READER_NAMESPACE, "celery_queue_length", "queue=analyses")
    bearer = {"Authorization": f"Bearer {token}"}
    wait_for(lambda: direct(reg, path, headers=bearer)[0] == 200, timeout=20, interval=0.5, what="the token accepted")
    status, body = direct(reg, path, headers=bearer)
    assert status == 200 and items_of(body)[0]["value"] == "7"
    assert direct(reg, path, headers={"Authorization": "Bearer not-a-token"})[0] == 401
    assert direct(reg, path)[0] == 401  # anonymous

    plane.kubectl("delete", "serviceaccount", "dashboard", "-n", READER_NAMESPACE)
    deleted_at = time.monotonic()

    # the real API server refuses the token once its service-account cache has seen the deletion ...
    def refused_by_the_api_server() -> bool:
        review = plane.request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
        )
        return review.status == 201 and review.body["status"].get("authenticated") is not True

    wait_for(refused_by_the_api_server, timeout=30, interval=0.3, what="the API server refusing the token")
    # ... the adapter keeps its cached answer (10 s), then asks again and refuses
    wait_for(lambda: direct(reg, path, headers=bearer)[0] == 401, timeout=30, interval=0.5, what="the token refused")
    assert time.monotonic() - deleted_at > 1.0


def test_front_proxy_ca_rotation_is_followed(reg: Registration) -> None:
    """kube-apiserver reloads a new --requestheader-client-ca-file and --proxy-client-cert-file from disk and
    merges the new CA into the ConfigMap (its controller keeps the old one listed); the adapter re-reads the
    ConfigMap every 10 s and accepts the aggregator's new certificate, which no CA it knew had signed."""
    plane = reg.plane
    old_ca, new_ca = plane.front_proxy_ca, CertificateAuthority("lm-test-front-proxy-ca-2")
    headers = {"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
    with pytest.raises((ssl.SSLError, ConnectionError)):  # before: a CA the adapter does not know
        direct(reg, LENGTH, cert=new_ca.issue(FRONT_PROXY_CN), headers=headers)
    plane.rotate_front_proxy(new_ca)
    new_cert = the_aggregators_cert(plane)

    def configmap_has_the_new_ca() -> bool:
        data = plane.get("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication").body["data"]
        bundle = data["requestheader-client-ca-file"]
        return new_ca.cert_pem.decode().strip() in bundle and old_ca.cert_pem.decode().strip() in bundle

    wait_for(configmap_has_the_new_ca, timeout=90, interval=0.5, what="the new front-proxy CA in the ConfigMap")

    def adapter_accepts_the_new_cert() -> bool:
        try:
            return direct(reg, LENGTH, cert=new_cert, headers=headers)[0] == 200
        except (ssl.SSLError, ConnectionError):
            return False

    wait_for(adapter_accepts_the_new_cert, timeout=30, interval=0.5, what="the adapter accepting the new CA")
    assert "front-proxy CA 2 cert(s)" in reg.adapter.output()
    # and the aggregation layer, now presenting the new certificate, is served
    wait_for(
        lambda: plane.kubectl("get", "--raw", LENGTH, check=False).returncode == 0, timeout=30, interval=0.5,
        what="values through the aggregator after the rotation",
    )  # fmt: skip
    assert items_of(json.loads(plane.kubectl("get", "--raw", LENGTH).stdout))[0]["value"] == "7"
