"""The front-proxy (request-header) CA the adapter learns from kube-system/extension-apiserver-authentication
follows the ConfigMap: when the CA there is replaced, the adapter accepts the new front proxy's certificate
and refuses the old one's within the documented re-read interval. The ConfigMap is served by the stand-in API
server (tests/adapter/faulty_kube_api.py), whose resourceVersion changes with every change; the real API
server's merge of a new CA (the old one kept) is tested in tests/controlplane/test_aggregation.py."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.pki import CertificateAuthority, Issued
from lensing_harness.adapter_process import RunningAdapter
from tests.adapter.conftest import VALUES, Client
from tests.adapter.faulty_kube_api import FaultyKubeAPI
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

#: docs/adapter.md: the ConfigMap is "read before serving and re-read every 10 s" (no flag changes it)
RE_READ_INTERVAL = 10.0
LENGTH = f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses"
PROXY_NAME = "front-proxy-client"
# the aggregator names the user in headers; system:masters is allowed without a SubjectAccessReview
AS_ALICE = {"X-Remote-User": "alice", "X-Remote-Group": "system:masters"}


def front_proxy_settings(ca: CertificateAuthority) -> dict[str, str]:
    """The request-header keys of the ConfigMap, as kube-apiserver writes them."""
    return {
        "requestheader-client-ca-file": ca.cert_pem.decode(),
        "requestheader-allowed-names": json.dumps([PROXY_NAME]),
        "requestheader-username-headers": json.dumps(["X-Remote-User"]),
        "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
        "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
    }


def as_front_proxy(adapter: RunningAdapter, proxy: Issued) -> int | None:
    """The status of a request the front proxy makes for alice on a new connection; None when the TLS
    handshake refuses its certificate."""
    client = Client(adapter, proxy)
    try:
        return client.get(LENGTH, AS_ALICE).status
    except (ssl.SSLError, ConnectionError):  # the server ends a handshake it refuses
        return None
    finally:
        client.close()


@pytest.fixture
def kube() -> Iterator[FaultyKubeAPI]:
    server = FaultyKubeAPI().start()
    yield server
    server.stop()


def test_replaced_front_proxy_ca_is_followed_within_the_re_read_interval(  # type: ignore[no-untyped-def]
    redis_url: str, kube: FaultyKubeAPI, adapter_factory, client_factory, tmp_path: Path
) -> None:
    old_ca, new_ca = CertificateAuthority("front-proxy-ca-old"), CertificateAuthority("front-proxy-ca-new")
    old_proxy, new_proxy = old_ca.issue(PROXY_NAME), new_ca.issue(PROXY_NAME)
    kube.set_auth_configmap(front_proxy_settings(old_ca))
    adapter = adapter_factory(
        ["--broker-url", redis_url, "--queue", "analyses", "--poll-interval", "0.2"],
        "--authentication-kubeconfig",
        str(kube.kubeconfig(tmp_path / "kube.kubeconfig")),
    )
    wait_for(lambda: as_front_proxy(adapter, old_proxy) == 200, 30, interval=0.2, what="the old front proxy served")
    assert as_front_proxy(adapter, new_proxy) is None
    kept_alive = client_factory(adapter, old_proxy)  # a connection the old proxy opened before the change
    assert kept_alive.get(LENGTH, AS_ALICE).status == 200

    reads_before = kube.configmap_reads
    kube.set_auth_configmap(front_proxy_settings(new_ca))
    # the next read comes at most one interval later; the margin is for that read and the request
    wait_for(
        lambda: as_front_proxy(adapter, new_proxy) == 200,
        RE_READ_INTERVAL + 2,
        interval=0.2,
        what="the new front proxy accepted",
    )
    assert kube.configmap_reads > reads_before
    assert as_front_proxy(adapter, old_proxy) is None  # the old CA is gone from the ConfigMap
    # on its open connection the old proxy's certificate no longer names anyone: anonymous, 401
    assert kept_alive.get(LENGTH, AS_ALICE).status == 401
