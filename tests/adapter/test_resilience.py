"""A broker that stops: 503 after the staleness budget, values again when it returns. Certificate files
replaced on disk: the next TLS handshake presents the new certificate."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
from celery import Celery

from adapter.pki import CertificateAuthority
from tests.adapter.conftest import VALUES
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

LENGTH = f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses"


def test_stopped_broker_answers_503_after_the_budget_then_recovers(  # type: ignore[no-untyped-def]
    redis_server, adapter_factory, client_factory
) -> None:
    server = redis_server()
    Celery("producer", broker=server.url).send_task("lensing.analyse_lens", args=[1], queue="analyses")
    adapter = adapter_factory(["--broker-url", server.url, "--poll-interval", "0.2", "--max-staleness", "2"])
    client = client_factory(adapter)
    wait_for(lambda: client.get(LENGTH).status == 200, 30, what="first value")
    server.stop()
    stopped = time.monotonic()
    reply = wait_for(lambda: (r := client.get(LENGTH)).status == 503 and r, 30, what="503")
    assert time.monotonic() - stopped >= 1.0  # within the budget the last good value was still served
    assert reply.json()["reason"] == "ServiceUnavailable" and "Retry-After" not in reply.headers
    assert "--max-staleness 2s" in reply.json()["message"]
    assert client.get("/readyz").status == 503
    metrics = client.get("/metrics").body.decode()
    assert 'lensing_adapter_broker_up{broker="default"} 0.0' in metrics

    server.start()  # same port, empty: the producer's message is gone, the queue reads 0
    reply = wait_for(lambda: (r := client.get(LENGTH)).status == 200 and r, 60, what="values again")
    assert reply.json()["items"][0]["value"] == "0"


def _served_cert(port: int, trust: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(trust))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_replaced_certificate_is_used_by_the_next_handshake(  # type: ignore[no-untyped-def]
    redis_url: str, adapter_factory, client_factory, tmp_path: Path
) -> None:
    serving_ca = CertificateAuthority("serving-ca")
    (tmp_path / "serving-ca.crt").write_bytes(serving_ca.cert_pem)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    serving_ca.issue("adapter-one", client=False, hosts=["127.0.0.1", "localhost"]).write(cert, key)
    adapter = adapter_factory(
        ["--broker-url", redis_url],
        "--tls-cert-file",
        str(cert),
        "--tls-private-key-file",
        str(key),
        server_ca_file=tmp_path / "serving-ca.crt",
    )
    kept_alive = client_factory(adapter)
    assert kept_alive.get("/healthz").status == 200

    from cryptography import x509

    def subject(der: bytes) -> str:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()

    assert subject(_served_cert(adapter.port, tmp_path / "serving-ca.crt")) == "CN=adapter-one"
    time.sleep(0.01)
    serving_ca.issue("adapter-two", client=False, hosts=["127.0.0.1", "localhost"]).write(cert, key)
    assert subject(_served_cert(adapter.port, tmp_path / "serving-ca.crt")) == "CN=adapter-two"
    assert kept_alive.get("/healthz").status == 200  # open connections carry on


def test_replaced_client_ca_is_used_for_new_connections(  # type: ignore[no-untyped-def]
    redis_url: str, adapter_factory, client_factory
) -> None:
    Celery("producer", broker=redis_url).send_task("lensing.analyse_lens", args=[1], queue="analyses")
    adapter = adapter_factory(["--broker-url", redis_url, "--poll-interval", "0.2"])
    first = client_factory(adapter)
    wait_for(lambda: first.get(LENGTH).status == 200, 30, what="the first value")
    new_ca = CertificateAuthority("rotated-client-ca")
    newcomer = new_ca.issue("admin", ["system:masters"])
    (adapter.workdir / "client-ca.crt").write_bytes(new_ca.cert_pem)

    def accepted() -> bool:
        client = client_factory(adapter, newcomer)
        try:
            status = client.get(LENGTH).status
        except (ssl.SSLError, OSError):
            return False  # still the old bundle: the handshake refuses the new CA's certificate
        finally:
            client.close()
        assert status == 200, status  # handshake passed: the newcomer is system:masters, so the value itself
        return True

    wait_for(accepted, 30, interval=0.3, what="a certificate of the new client CA accepted")
