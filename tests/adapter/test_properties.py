"""Property tests against a running adapter: whatever the path, selector or headers, the answer is never a
5xx other than 503 and never carries a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.pki import CertificateAuthority
from lensing_harness.adapter_process import RunningAdapter
from tests.adapter.conftest import VALUES, Client, Reply

pytestmark = pytest.mark.integration

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SEGMENTS = st.one_of(
    st.sampled_from(
        [
            "apis",
            "external.metrics.k8s.io",
            "custom.metrics.k8s.io",
            "v1beta1",
            "v1",
            "namespaces",
            "default",
            "celery_queue_length",
            "celery_queue_backlog",
            "*",
            "..",
            ".",
            "",
            "healthz",
            "metrics",
            "openapi",
            "v2",
        ]
    ),
    st.text(min_size=0, max_size=12),
)
SELECTOR_TEXT = st.text(alphabet=st.sampled_from(list("queuanlysd=!(),<>+ -_./9qé\t%")), max_size=30) | st.text(
    max_size=20
)
HEADER_NAMES = st.sampled_from(
    [
        "X-Remote-User",
        "X-Remote-Group",
        "X-Remote-Extra-Scopes",
        "Authorization",
        "Accept",
        "Content-Type",
        "Impersonate-User",
        "X-Forwarded-For",
    ]
)
HEADER_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)


def check(reply: Reply) -> None:
    assert reply.status < 500 or reply.status == 503, (reply.status, reply.body[:300])
    text = reply.body.decode("utf-8", "replace")
    assert "Traceback" not in text and 'File "' not in text, text[:300]
    if reply.headers.get("Content-Type") == "application/json" and reply.status >= 400:
        assert '"kind":"Status"' in text and f'"code":{reply.status}' in text


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@pytest.fixture
def running(redis_url: str, adapter_factory, client_factory, tmp_path) -> Iterator[tuple[RunningAdapter, Client]]:  # type: ignore[no-untyped-def]
    front_ca = CertificateAuthority("front-proxy-ca")
    (tmp_path / "front-ca.crt").write_bytes(front_ca.cert_pem)
    adapter = adapter_factory(
        ["--broker-url", redis_url, "--poll-interval", "0.5"],
        "--requestheader-client-ca-file",
        str(tmp_path / "front-ca.crt"),
        "--requestheader-allowed-names",
        "front-proxy-client",
    )
    adapter.extra["front_proxy"] = client_factory(adapter, front_ca.issue("front-proxy-client"))
    yield adapter, client_factory(adapter)


@PROPERTY_SETTINGS
@given(segments=st.lists(SEGMENTS, max_size=7), query=st.text(max_size=20))
def test_any_path(running: tuple[RunningAdapter, Client], segments: list[str], query: str) -> None:
    _adapter, client = running
    path = "/" + "/".join(quote(s, safe="*") for s in segments)
    if query:
        path += "?" + quote(query, safe="=&")
    check(client.get(path))


@PROPERTY_SETTINGS
@given(selector=SELECTOR_TEXT, metric=st.sampled_from(["celery_queue_length", "celery_queue_backlog"]))
def test_any_selector(running: tuple[RunningAdapter, Client], selector: str, metric: str) -> None:
    _adapter, client = running
    reply = client.get(f"{VALUES}/default/{metric}?labelSelector={quote(selector, safe='')}")
    check(reply)
    assert reply.status in (200, 400, 503)
    if reply.status == 400:
        assert reply.json()["reason"] == "BadRequest" and "\n" not in reply.json()["message"]


@PROPERTY_SETTINGS
@given(
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
    caller=st.sampled_from(["client", "front-proxy", "anonymous"]),
)
def test_any_headers(running: tuple[RunningAdapter, Client], headers: dict[str, str], caller: str) -> None:
    adapter, client = running
    target = {"client": client, "front-proxy": adapter.extra["front_proxy"]}.get(caller)
    anonymous = target is None
    target = target or Client(adapter, None, anonymous=True)
    try:
        reply = target.get(f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses", headers)
    finally:
        if anonymous:
            target.close()
    check(reply)
    if not all(_utf8(v.encode("latin-1")) for v in headers.values()):  # http.client sends latin-1
        assert reply.status == 400, (headers, reply.status)  # a request that is not UTF-8, whoever sends it
        return
    if anonymous:
        assert reply.status == 401  # no headers make an anonymous caller someone
    if caller == "front-proxy":
        named = any(k == "X-Remote-User" and v.strip(" \t") for k, v in headers.items())  # HTTP trims SP, HTAB
        assert reply.status in ((200, 403, 503) if named else (401,)), (headers, reply.status)
