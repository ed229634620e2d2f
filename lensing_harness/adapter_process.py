"""What `make demo` needs from the adapter: start it on a free port with its certificates under the demo's
directory, issue a client certificate and a kubeconfig, the `kubectl get --raw` line to paste, and the
worker HPA's decision computed the way the HPA controller computes it."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapter.pki import CertificateAuthority, Issued
from adapter.quantity import parse_quantity
from lensing_harness import kubeconfig
from lensing_harness.kubeconfig import b64
from lensing_harness.ports import free_port
from lensing_harness.processes import stop_process

#: the platform's worker HPA: External metric, target AverageValue 10, 2..10 replicas
HPA_TARGET_AVERAGE = 10
HPA_MIN_REPLICAS = 2
HPA_MAX_REPLICAS = 10
HPA_TOLERANCE = 0.1  # the controller's --horizontal-pod-autoscaler-tolerance default


def write_kubeconfig(path: Path, server: str, server_ca_pem: bytes, client: Issued, user: str = "demo") -> Path:
    """A kubeconfig holding a client certificate (embedded), trusting ``server_ca_pem`` for the server."""
    credentials = {"client-certificate-data": b64(client.cert_pem), "client-key-data": b64(client.key_pem)}
    return kubeconfig.write_kubeconfig(path, server, credentials, user_name=user, server_ca_pem=server_ca_pem)


@dataclass
class RunningAdapter:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    kubeconfig: Path
    client_ca: CertificateAuthority
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    server_ca_file: Path | None = None  # what verifies the serving certificate (default: the self-signed one)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def serving_cert(self) -> Path:
        """The file a client trusts for the adapter's serving certificate."""
        return self.server_ca_file or self.workdir / "certs" / "apiserver.crt"

    def client_ssl_context(self, client: Issued | None = None) -> ssl.SSLContext:
        """An SSL context that trusts the adapter and presents ``client`` (default: the kubeconfig's user)."""
        context = ssl.create_default_context(cafile=str(self.serving_cert))
        issued = client or self.extra["client"]
        cert, key = self.workdir / f"client-{id(issued)}.crt", self.workdir / f"client-{id(issued)}.key"
        issued.write(cert, key)
        context.load_cert_chain(str(cert), str(key))
        return context

    def stop(self) -> None:
        stop_process(self.process)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_adapter(
    workdir: Path,
    broker_args: Sequence[str],
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout: float = 30.0,
    client_ca: CertificateAuthority | None = None,
    client_ca_flag: bool = True,
    server_ca_file: Path | None = None,
) -> RunningAdapter:
    """Start `python -m adapter` on 127.0.0.1 with a self-signed serving certificate in ``workdir/certs``,
    a client CA in ``workdir`` and a kubeconfig whose user (CN demo, O system:masters) it trusts.
    ``server_ca_file``: the CA of a serving certificate given with --tls-cert-file.
    ``client_ca_flag=False`` leaves --client-ca-file out (the CA then comes from the cluster's ConfigMap)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    ca = client_ca or CertificateAuthority("lensing-demo-client-ca")
    (workdir / "client-ca.crt").write_bytes(ca.cert_pem)
    client = ca.issue("demo", ["system:masters"])
    log_path = workdir / "adapter.log"
    args = [
        sys.executable,
        "-m",
        "adapter",
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        str(port),
        "--cert-dir",
        str(workdir / "certs"),
        *(["--client-ca-file", str(workdir / "client-ca.crt")] if client_ca_flag else []),
        *broker_args,
        *extra_args,
    ]
    repo = Path(__file__).resolve().parents[1]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(repo), **(env or {})},
        )
    running = RunningAdapter(
        process, port, workdir, workdir / "kubeconfig", ca, log_path, {"client": client}, server_ca_file
    )
    deadline = time.monotonic() + timeout
    while not running.serving_cert.exists() or not _healthy(running):
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise RuntimeError(f"the adapter did not start: {running.output()[-2000:]}")
        time.sleep(0.1)
    write_kubeconfig(running.kubeconfig, running.url, running.serving_cert.read_bytes(), client)
    return running


def _healthy(running: RunningAdapter) -> bool:
    context = ssl.create_default_context(cafile=str(running.serving_cert))
    with (
        contextlib.suppress(OSError, ValueError),
        urllib.request.urlopen(f"{running.url}/healthz", context=context, timeout=2) as response,
    ):
        return bool(response.status == 200)
    return False


def value_path(namespace: str = "default", metric: str = "celery_queue_backlog", queue: str = "analyses") -> str:
    return f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector=queue%3D{queue}"


def kubectl_command(kubeconfig: Path, kubectl: str = "kubectl", **path_args: str) -> str:
    """The line a user pastes to see what the HPA sees."""
    path = shlex.quote(value_path(**path_args))
    return f"{shlex.quote(kubectl)} --kubeconfig {shlex.quote(str(kubeconfig))} get --raw {path}"


def hpa_desired_replicas(
    current_replicas: int,
    metric_total: Decimal | int | float,
    target_average: Decimal | int | float = HPA_TARGET_AVERAGE,
    min_replicas: int = HPA_MIN_REPLICAS,
    max_replicas: int = HPA_MAX_REPLICAS,
    tolerance: float = HPA_TOLERANCE,
) -> int:
    """The replica count the HPA controller computes for an External metric with an AverageValue target
    (``GetExternalPerPodMetricReplicas``): usage ratio = total / (target x current); inside the tolerance
    the count stays, else ceil(total / target); then clamped to [min, max]. Scaling from 0 replicas is
    off in the controller, and behaviors/stabilization windows (which delay, not change, the answer) are
    not modelled."""
    if current_replicas <= 0:
        return 0
    total_milli = int(Decimal(str(metric_total)) * 1000)  # the controller works in milli-units
    target_milli = int(Decimal(str(target_average)) * 1000)
    usage_ratio = total_milli / (target_milli * current_replicas)
    desired = current_replicas
    if abs(1.0 - usage_ratio) > tolerance:
        desired = math.ceil(total_milli / target_milli)
    return max(min_replicas, min(max_replicas, desired))


def hpa_line(items: Sequence[Mapping[str, Any]], current_replicas: int) -> str:
    """One line: what the worker HPA would do with these ExternalMetricValueList items."""
    total = sum((parse_quantity(str(item["value"])) for item in items), Decimal(0))
    desired = hpa_desired_replicas(current_replicas, total)
    return (
        f"worker HPA (AverageValue {HPA_TARGET_AVERAGE}, min {HPA_MIN_REPLICAS}, max {HPA_MAX_REPLICAS}): "
        f"metric total {total:g} with {current_replicas} replicas -> {desired} replicas"
    )


class AdapterDemo:
    """The demo's adapter: started on a free port with its files in a temporary directory; ``lines`` is the
    demo view's hook (what `kubectl get --raw` shows now, and what the worker HPA would do with it)."""

    SYNC_PERIOD = 15.0  # the HPA controller's --horizontal-pod-autoscaler-sync-period default

    def __init__(self, broker_url: str, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="lm-demo-adapter-"))
        self.running = start_adapter(self.workdir, ["--broker-url", broker_url, "--log-level", "warning"])
        repo_kubectl = Path(__file__).resolve().parents[1] / ".tools" / "bin" / "kubectl"
        self.kubectl = str(repo_kubectl) if repo_kubectl.exists() else (shutil.which("kubectl") or "kubectl")
        self._context = self.running.client_ssl_context()
        self._conn: http.client.HTTPSConnection | None = None
        self.replicas = HPA_MIN_REPLICAS
        self._next_sync = time.monotonic() + self.SYNC_PERIOD

    def header_lines(self) -> list[str]:
        return [
            f"adapter: {self.running.url} (external.metrics.k8s.io), kubeconfig {self.running.kubeconfig}",
            f"  what the HPA sees: {kubectl_command(self.running.kubeconfig, self.kubectl)}",
        ]

    def _items(self, metric: str) -> list[dict[str, Any]]:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection("127.0.0.1", self.running.port, context=self._context, timeout=5)
        try:
            self._conn.request("GET", value_path(metric=metric))
            response = self._conn.getresponse()
            body = json.loads(response.read())
        except (OSError, http.client.HTTPException, ValueError):
            self._conn.close()
            self._conn = None
            raise
        if response.status != 200:
            raise RuntimeError(f"{response.status} {body.get('reason')}: {body.get('message')}")
        return list(body["items"])

    def lines(self, _metrics: object = None) -> list[str]:
        try:
            length, backlog = self._items("celery_queue_length"), self._items("celery_queue_backlog")
        except (OSError, RuntimeError, ValueError, http.client.HTTPException) as exc:
            return ["", f"adapter: no value ({exc}); the HPA would keep {self.replicas} replicas"]
        now = time.monotonic()
        total_length = sum((parse_quantity(str(i["value"])) for i in length), Decimal(0))
        if now >= self._next_sync:  # a simulated HPA, syncing every 15 s on celery_queue_length
            self.replicas = hpa_desired_replicas(self.replicas, total_length)
            self._next_sync = now + self.SYNC_PERIOD
        on_backlog = hpa_desired_replicas(self.replicas, sum(parse_quantity(str(i["value"])) for i in backlog))
        return [
            "",
            f"adapter: celery_queue_length{{queue=analyses}} = {length[0]['value']}, "
            f"celery_queue_backlog = {backlog[0]['value']} (read at {length[0]['timestamp']})",
            hpa_line(length, self.replicas) + f" (on celery_queue_backlog: {on_backlog})",
        ]

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.running.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
