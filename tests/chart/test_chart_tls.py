"""The adapter's serving certificate in every tls.mode, and the APIService that trusts it."""

from __future__ import annotations

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.chart.conftest import CHART, NAMESPACE, RELEASE, Renders, helm

SERVICE = f"{RELEASE}-lensing-metrics-adapter"
DNS_NAMES = {
    SERVICE,
    f"{SERVICE}.{NAMESPACE}",
    f"{SERVICE}.{NAMESPACE}.svc",
    f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
}


def b64pem(value: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(value))


def test_generated_certificate_verifies_against_the_ca_bundle(renders: Renders) -> None:
    r = renders.get("default")
    secret = r.one("Secret", "-adapter-tls")
    assert secret["type"] == "kubernetes.io/tls"
    api = r.one("APIService", ".external.metrics.k8s.io")
    ca = b64pem(api["spec"]["caBundle"])
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(api["spec"]["caBundle"])
    cert = b64pem(secret["data"]["tls.crt"])
    cert.verify_directly_issued_by(ca)  # raises unless ca signed cert
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    sans = set(
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )
    assert sans >= DNS_NAMES
    assert api["spec"]["service"]["name"] == SERVICE
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=3000)  # validityDays 3650
    key = load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    # the pods roll when the certificate changes, and mount exactly this Secret
    spec = r.one("Deployment", "-adapter")["spec"]["template"]
    assert spec["metadata"]["annotations"]["checksum/tls"]
    volume = next(v for v in spec["spec"]["volumes"] if v["name"] == "serving-cert")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


def test_cert_manager_mode_injects_the_ca(renders: Renders) -> None:
    r = renders.get("tls-cert-manager")
    assert not [s for s in r.of_kind("Secret") if s["type"] == "kubernetes.io/tls"]
    api = r.one("APIService", ".external.metrics.k8s.io")
    assert "caBundle" not in api["spec"] and "insecureSkipTLSVerify" not in api["spec"]
    cert = r.one("Certificate", "-adapter")
    assert api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{cert['metadata']['name']}"
    assert set(cert["spec"]["dnsNames"]) == DNS_NAMES
    assert cert["spec"]["secretName"] == f"{RELEASE}-lensing-metrics-adapter-tls"
    assert "server auth" in cert["spec"]["usages"]
    issuers = {i["metadata"]["name"]: i["spec"] for i in r.of_kind("Issuer")}
    assert cert["spec"]["issuerRef"]["name"] in issuers
    ca_cert = r.one("Certificate", "-adapter-ca")
    assert ca_cert["spec"]["isCA"] is True and ca_cert["spec"]["issuerRef"]["name"] in issuers
    volume = next(
        v for v in r.one("Deployment", "-adapter")["spec"]["template"]["spec"]["volumes"] if v["name"] == "serving-cert"
    )
    assert volume["secret"]["secretName"] == cert["spec"]["secretName"]


def test_existing_secret_mode_uses_the_given_ca(renders: Renders) -> None:
    r = renders.get("tls-existing-secret")
    assert not [s for s in r.of_kind("Secret") if s["type"] == "kubernetes.io/tls"]
    assert r.one("APIService", ".external.metrics.k8s.io")["spec"]["caBundle"] == renders.existing_ca_b64
    volume = next(
        v for v in r.one("Deployment", "-adapter")["spec"]["template"]["spec"]["volumes"] if v["name"] == "serving-cert"
    )
    assert volume["secret"]["secretName"] == "adapter-serving"


def test_existing_secret_without_a_ca_fails_with_a_message() -> None:
    proc = helm(
        "template", RELEASE, str(CHART), "-n", NAMESPACE,
        "--set", "adapter.tls.mode=existingSecret", "--set", "adapter.tls.existingSecret=adapter-serving",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "adapter.tls.caBundle" in proc.stderr


def test_insecure_skip_tls_verify_only_when_asked_by_name(renders: Renders) -> None:
    for name in ("default", "tls-cert-manager", "tls-existing-secret", "full"):
        for api in renders.get(name).of_kind("APIService"):
            assert "insecureSkipTLSVerify" not in api["spec"], name
    api = renders.get("insecure-by-name").one("APIService", ".external.metrics.k8s.io")
    assert api["spec"]["insecureSkipTLSVerify"] is True and "caBundle" not in api["spec"]


# The generated certificate kept across `helm upgrade` (lookup) and tls.mode=existingSecret reading ca.crt from the
# Secret: tests/controlplane/test_chart_install.py, against a real kube-apiserver.
