"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager, built from
the Go module tests/k8s by scripts/build-k8s.sh, on free loopback ports, with certificates made here.

What it turns on, and why (flags as hack/local-up-cluster.sh and controller-runtime's envtest pass them):
- client-certificate authentication (one CA, ``client_ca``; users are CN, groups O) and ``Node,RBAC``;
- service-account signing keys and an issuer, so TokenRequest works and the controller manager runs each
  controller as its own service account (``--use-service-account-credentials``, as kubeadm and
  local-up-cluster do): the HPA controller is ``system:serviceaccount:kube-system:horizontal-pod-autoscaler``;
- the aggregation layer: a front-proxy CA (``--requestheader-*``) and the aggregator's client certificate
  (``--proxy-client-*``), both files the API server reloads when they change (``rotate_front_proxy``);
- in the controller manager only the deployment, replicaset and horizontal-pod-autoscaler controllers, the HPA
  controller syncing every second. There is no kubelet and no scheduler: pods stay Pending unless a test writes
  their status.

Each process runs in a session of its own and is stopped with its process group; the logs stay in the work
directory and ``logs()`` prints their tails when something fails.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapter.pki import CertificateAuthority, Issued
from lensing_harness.adapter_process import write_kubeconfig
from tests.support.services import REPO, free_port

KUBECTL = REPO / ".tools" / "bin" / "kubectl"
HELM = REPO / ".tools" / "bin" / "helm"
BUILD_SCRIPT = REPO / "scripts" / "build-k8s.sh"
#: the aggregator's client certificate CN, the one name the adapter is told to accept as a front proxy
FRONT_PROXY_CN = "front-proxy-client"
SERVICE_CIDR = "10.0.0.0/24"
CONTROLLERS = "deployment-controller,replicaset-controller,horizontal-pod-autoscaler-controller"
HPA_SERVICE_ACCOUNT = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"


class ControlPlaneError(RuntimeError):
    pass


def k8s_bin_dir() -> Path | None:
    """The folder of the built binaries, or None when scripts/build-k8s.sh has not built them yet."""
    done = subprocess.run([str(BUILD_SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def _signing_key() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Reply:
    status: int
    body: Any


@dataclass
class ControlPlane:
    workdir: Path
    bin_dir: Path
    client_ca: CertificateAuthority = field(default_factory=lambda: CertificateAuthority("lm-test-cluster-ca"))
    front_proxy_ca: CertificateAuthority = field(default_factory=lambda: CertificateAuthority("lm-test-front-proxy-ca"))
    port: int = 0
    components: dict[str, Component] = field(default_factory=dict)
    started_in: float = 0.0
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def server_ca_pem(self) -> bytes:
        return self.client_ca.cert_pem  # the same CA signed the API server's serving certificate

    # ---- start and stop ----

    def start(self, timeout: float = 120.0) -> ControlPlane:
        begin = time.monotonic()
        etcd_port, peer_port = free_port(), free_port()
        self.port = free_port()
        self._write_pki()  # the kubeconfigs name the port
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        # etcd's data on tmpfs where there is one: fsync-free and off the shared disk
        data_root = Path("/dev/shm") if Path("/dev/shm").is_dir() else self.workdir
        self._etcd_data = Path(tempfile.mkdtemp(prefix="lm-etcd-", dir=data_root))
        self._spawn(
            "etcd",
            [
                f"--data-dir={self._etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        p = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'client-ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
                f"--requestheader-allowed-names={FRONT_PROXY_CN}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
                "--enable-aggregator-routing=false",  # the ClusterIP/ExternalName resolver: an ExternalName Service
                "--profiling=false",
                "--v=1",
            ],
        )
        deadline = begin + timeout
        self._wait(lambda: self.get("/readyz").status == 200, deadline, "kube-apiserver /readyz")
        kcm_port = free_port()
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                f"--authentication-kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                f"--controllers={CONTROLLERS}",
                "--use-service-account-credentials=true",
                f"--root-ca-file={p / 'client-ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--horizontal-pod-autoscaler-sync-period=1s",
                "--leader-elect=false",
                "--profiling=false",
                "--v=2",  # the HPA controller logs each rescale and each failed metric at 2
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        self._wait(lambda: _get_status(kcm_port, "/healthz", insecure) == 200, deadline, "kube-controller-manager")
        self._wait(
            lambda: (
                self.get("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication").status == 200
            ),
            deadline,
            "the extension-apiserver-authentication ConfigMap",
        )
        self.started_in = time.monotonic() - begin
        return self

    def stop(self) -> None:
        for component in reversed(list(self.components.values())):
            component.stop()
        if getattr(self, "_etcd_data", None):
            shutil.rmtree(self._etcd_data, ignore_errors=True)

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(self.bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.components[name] = Component(name, process, log_path)

    def _wait(self, ready: Any, deadline: float, what: str) -> None:
        while True:
            dead = [c.name for c in self.components.values() if not c.alive()]
            if dead:
                raise ControlPlaneError(f"{', '.join(dead)} exited while waiting for {what}\n{self.logs()}")
            with contextlib.suppress(OSError, http.client.HTTPException, ssl.SSLError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.2)

    def logs(self, lines: int = 40) -> str:
        return "\n".join(
            f"---- {c.name} (exit {c.process.poll()}), {c.log_path} ----\n{c.tail(lines)}"
            for c in self.components.values()
        )

    # ---- certificates and identities ----

    def _write_pki(self) -> None:
        p = self.pki
        p.mkdir(parents=True, exist_ok=True)
        (p / "client-ca.crt").write_bytes(self.client_ca.cert_pem)
        self.client_ca.issue(
            "kube-apiserver",
            client=False,
            hosts=["127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        ).write(p / "apiserver.crt", p / "apiserver.key")
        private, public = _signing_key()
        (p / "sa.key").write_bytes(private)
        (p / "sa.pub").write_bytes(public)
        (p / "front-proxy-ca.crt").write_bytes(self.front_proxy_ca.cert_pem)
        self.front_proxy_ca.issue(FRONT_PROXY_CN).write(p / "front-proxy-client.crt", p / "front-proxy-client.key")
        self.user_kubeconfig("admin", ["system:masters"], self.admin_kubeconfig)
        self.user_kubeconfig("system:kube-controller-manager", [], self.workdir / "kcm.kubeconfig")

    def user_kubeconfig(self, user: str, groups: Sequence[str] = (), path: Path | None = None) -> Path:
        """A kubeconfig for the API server with a client certificate for ``user`` in ``groups``."""
        path = path or self.workdir / "users" / f"{user.replace(':', '_')}.kubeconfig"
        return write_kubeconfig(path, self.url, self.server_ca_pem, self.client_ca.issue(user, groups), user)

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """A kubeconfig that presents a bearer token (a service account's, from TokenRequest)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.server_ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "token"}}],
            "current-context": "test",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def service_account_token(self, namespace: str, name: str, seconds: int = 7200) -> str:
        done = self.kubectl("create", "token", name, "-n", namespace, f"--duration={seconds}s")
        return done.stdout.strip()

    def rotate_front_proxy(self, new_ca: CertificateAuthority) -> None:
        """``new_ca`` as the front-proxy CA, and an aggregator client certificate from it, written over the files
        the API server was started with: it reloads both and adds the new CA to the
        extension-apiserver-authentication ConfigMap (its controller merges: the old CA stays listed there)."""
        p = self.pki
        tmp = p / "front-proxy-ca.crt.tmp"
        tmp.write_bytes(new_ca.cert_pem)
        tmp.replace(p / "front-proxy-ca.crt")
        new_ca.issue(FRONT_PROXY_CN).write(p / "front-proxy-client.crt", p / "front-proxy-client.key")
        self.front_proxy_ca = new_ca

    # ---- talking to the API server ----

    def _context(self, kubeconfig_user: str, groups: Sequence[str]) -> ssl.SSLContext:
        key = f"{kubeconfig_user}|{','.join(groups)}"
        if key not in self._contexts:
            context = ssl.create_default_context(cadata=self.server_ca_pem.decode())
            issued: Issued = self.client_ca.issue(kubeconfig_user, groups)
            d = self.workdir / "clients"
            name = key.replace(":", "_").replace("|", "_").replace(",", "_")
            issued.write(d / f"{name}.crt", d / f"{name}.key")
            context.load_cert_chain(str(d / f"{name}.crt"), str(d / f"{name}.key"))
            self._contexts[key] = context
        return self._contexts[key]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        user: str = "admin",
        groups: Sequence[str] = ("system:masters",),
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        """One HTTPS request as ``user`` (a client certificate of the cluster CA); JSON in and out."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._context(user, groups), timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
            conn.request(
                method,
                path,
                body=data,
                headers={"Accept": "application/json", "Content-Type": content_type, **(headers or {})},
            )
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Reply(response.status, parsed)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(kubeconfig or self.admin_kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def apply(self, objects: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        docs = [objects] if isinstance(objects, Mapping) else list(objects)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs))

    def ensure_namespace(self, name: str) -> None:
        """A namespace and its ``default`` service account (no service-account controller runs)."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        self.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}})


def _get_status(port: int, path: str, context: ssl.SSLContext) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@contextlib.contextmanager
def control_plane(workdir: Path, bin_dir: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(workdir, bin_dir)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
