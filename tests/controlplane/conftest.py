"""The adapter registered with the real aggregation layer: a local `python -m adapter` process, the chart's
RBAC, ServiceAccount and APIServices (from `helm template`), and a Service of type ExternalName (localhost).

How the aggregator reaches it (kube-aggregator v0.35, without --enable-aggregator-routing): the
ClusterIP resolver turns an ExternalName Service into https://<externalName>:<APIService port> (so the
APIService's port is the adapter's local port), and verifies the serving certificate against the APIService's
caBundle for the name <service>.<namespace>.svc. The availability check skips the endpoint check for
ExternalName Services and GETs /apis/<group>/<version> as system:kube-aggregator in system:masters.

The adapter is given no --client-ca-file or --requestheader-* flags: it reads them from the real
kube-system/extension-apiserver-authentication ConfigMap. It asks the real API server for TokenReviews and
SubjectAccessReviews (--authentication-kubeconfig, --authorization-kubeconfig) and lists pods
(--lister-kubeconfig) as the chart's ServiceAccount, with a token from TokenRequest and no other RBAC than the
chart's.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import ssl
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.pki import CertificateAuthority
from lensing_harness.adapter_process import RunningAdapter, start_adapter
from tests.chart.conftest import CHART, helm
from tests.support.controlplane import ControlPlane
from tests.support.prometheus import PrometheusServer, RequestCounterServer, short_window_rules
from tests.support.services import RedisServer, free_port, wait_for

pytestmark = pytest.mark.integration

RELEASE = "lm"
NAMESPACE = "lensing-metrics"
#: what the registration applies from the chart's render (the adapter's Deployment cannot run: no kubelet)
APPLIED_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "APIService")
ALWAYS_ALLOW = "/healthz,/readyz,/livez,/metrics"  # as the chart's adapter.alwaysAllowPaths
MAX_STALENESS = 3  # seconds: a stopped broker turns into 503 this soon (the default is 10)


@dataclass
class Registration:
    plane: ControlPlane
    adapter: RunningAdapter
    broker: RedisServer
    prometheus: PrometheusServer
    requests: RequestCounterServer
    serving_ca: CertificateAuthority
    objects: list[dict[str, Any]]
    service: dict[str, Any]
    workdir: Path
    _identity_kubeconfig: Path = field(default=Path())

    @property
    def apiservices(self) -> list[str]:
        return [o["metadata"]["name"] for o in self.objects if o["kind"] == "APIService"]

    def adapter_metrics(self) -> str:
        """The adapter's own /metrics (an always-allowed path), straight from the adapter."""
        context = ssl.create_default_context(cadata=self.serving_ca.cert_pem.decode())
        context.check_hostname = False  # the certificate names <service>.<namespace>.svc, this asks 127.0.0.1
        with urllib.request.urlopen(f"{self.adapter.url}/metrics", context=context, timeout=10) as response:
            return str(response.read().decode())

    def metric_value(self, name: str, **labels: str) -> float:
        """One sample of the adapter's /metrics (0 when the series is absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.adapter_metrics().splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def chart_render(port: int, ca_pem: bytes, broker_url: str, values: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The chart's objects as `helm template` renders them with its defaults (and ``values``, `-f` files), the
    serving CA given as tls.mode=existingSecret + caBundle, and the adapter's local port as the Service port."""
    out = helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--set", f"broker.url={broker_url}",
        "--set", "adapter.tls.mode=existingSecret",
        "--set", "adapter.tls.existingSecret=adapter-serving",
        "--set", f"adapter.tls.caBundle={base64.b64encode(ca_pem).decode()}",
        "--set", f"adapter.service.port={port}",
        *itertools.chain.from_iterable(("-f", v) for v in values),
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def adapter_objects(docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the registration applies: the adapter's RBAC, ServiceAccount and APIServices."""
    return [
        d
        for d in docs
        if d["kind"] in APPLIED_KINDS and d["metadata"]["labels"].get("app.kubernetes.io/component") == "adapter"
    ]


def chart_adapter_args(docs: Sequence[dict[str, Any]], *prefixes: str) -> list[str]:
    """The rendered adapter Deployment's arguments that start with one of ``prefixes``."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-adapter")]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return [a for a in args if a.startswith(prefixes)]


def apiservice_available(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    reply = plane.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
    if reply.status != 200:
        return None
    for condition in reply.body.get("status", {}).get("conditions", []):
        if condition["type"] == "Available":
            return condition if condition["status"] == "True" else None
    return None


def apiservice_condition(plane: ControlPlane, name: str) -> dict[str, Any]:
    reply = plane.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
    assert reply.status == 200, reply.body
    return next(c for c in reply.body["status"]["conditions"] if c["type"] == "Available")


@contextlib.contextmanager
def registered_adapter(
    plane: ControlPlane,
    workdir: Path,
    queues: Sequence[str],
    *,
    rates: dict[tuple[str, str], float] | None = None,
    broker_args: Sequence[str] = (),
    chart_values: Sequence[str] = (),
    chart_args: Sequence[str] = (),
    adapter_args: Sequence[str] = (),
) -> Iterator[Registration]:
    """A private redis-server as the broker, a real Prometheus scraping pretend API pods, and the adapter reading
    both, registered for external.metrics.k8s.io and custom.metrics.k8s.io. Everything removed afterwards.
    ``chart_values``: value files the chart is rendered with; ``chart_args``: prefixes of the rendered adapter
    Deployment's arguments the local adapter is given too; ``adapter_args``: more arguments, last."""
    broker = RedisServer(broker_args).start()
    requests = RequestCounterServer(rates or {}).start()
    prometheus = PrometheusServer([requests.target])
    adapter: RunningAdapter | None = None
    objects: list[dict[str, Any]] = []
    service: dict[str, Any] = {}
    try:
        prometheus.start()
        port = free_port()
        plane.ensure_namespace(NAMESPACE)
        serving_ca = CertificateAuthority("lm-test-adapter-serving-ca")
        rendered = chart_render(port, serving_ca.cert_pem, broker.url, chart_values)
        objects = adapter_objects(rendered)
        plane.apply(objects)
        (sa,) = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
        (svc_name,) = {o["spec"]["service"]["name"] for o in objects if o["kind"] == "APIService"}
        serving = serving_ca.issue(
            f"{svc_name}.{NAMESPACE}.svc", client=False, hosts=[f"{svc_name}.{NAMESPACE}.svc", "localhost", "127.0.0.1"]
        )
        serving.write(workdir / "serving.crt", workdir / "serving.key")
        (workdir / "serving-ca.crt").write_bytes(serving_ca.cert_pem)
        identity = plane.token_kubeconfig(plane.service_account_token(NAMESPACE, sa), workdir / "adapter.kubeconfig")
        # RBAC is watched by the authorizer: wait until the chart's RoleBinding lets the adapter read the ConfigMap
        wait_for(
            lambda: plane.kubectl(
                "auth", "can-i", "get", "configmaps/extension-apiserver-authentication", "-n", "kube-system",
                kubeconfig=identity, check=False,
            ).stdout.strip() == "yes",
            timeout=30, interval=0.3, what="the chart's RBAC for the adapter",
        )  # fmt: skip
        config = workdir / "adapter.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "brokers": [{"name": "platform", "url": broker.url, "queues": list(queues), "namespaces": ["*"]}],
                    **short_window_rules(),
                }
            )
        )
        adapter = start_adapter(
            workdir / "adapter",
            [],
            port=port,
            client_ca_flag=False,
            server_ca_file=workdir / "serving-ca.crt",
            extra_args=[
                f"--config={config}",
                f"--tls-cert-file={workdir / 'serving.crt'}",
                f"--tls-private-key-file={workdir / 'serving.key'}",
                f"--authentication-kubeconfig={identity}",
                f"--authorization-kubeconfig={identity}",
                f"--lister-kubeconfig={identity}",
                f"--prometheus-url={prometheus.url}",
                f"--authorization-always-allow-paths={ALWAYS_ALLOW}",
                "--poll-interval=0.5",
                f"--max-staleness={MAX_STALENESS}",
                "--log-level=info",
                *(chart_adapter_args(rendered, *chart_args) if chart_args else ()),
                *adapter_args,
            ],
        )
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc_name, "namespace": NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        }
        plane.apply(service)
        registration = Registration(
            plane, adapter, broker, prometheus, requests, serving_ca, objects, service, workdir, identity
        )
        for name in registration.apiservices:
            wait_for(
                lambda name=name: apiservice_available(plane, name),
                timeout=60,
                interval=0.3,
                what=f"APIService {name} Available=True (adapter log: {adapter.output()[-1500:] if adapter else ''})",
            )
        yield registration
    finally:
        if objects or service:
            docs = [*objects, *([service] if service else [])]
            plane.kubectl(
                "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=yaml.safe_dump_all(docs), check=False
            )
        if adapter is not None:
            adapter.stop()
        prometheus.close()
        requests.close()
        broker.close()


def raw_path(namespace: str, metric: str, selector: str = "") -> str:
    from urllib.parse import quote

    query = f"?labelSelector={quote(selector, safe='')}" if selector else ""
    return f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}{query}"


def items_of(body: Any) -> list[dict[str, Any]]:
    assert isinstance(body, dict) and body.get("kind") == "ExternalMetricValueList", body
    return list(body["items"])


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)[:3000]
