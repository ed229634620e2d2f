"""Issue 15, findings 1-4 and 7, against a running adapter on loopback, every loop bounded: hostile
connections (silent after the TLS handshake, silent before the ClientHello, a slow request head, an idle
keep-alive) with the adapter's memory sampled; request lines, headers, bodies and selectors over the
limits; bytes that are not UTF-8; a selector encoded twice; and a short fuzz run (the long one is
benchmarks/fuzz_adapter.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable

import pytest

from lensing_harness import hostile
from lensing_harness.adapter_process import RunningAdapter
from tests.adapter.conftest import VALUES, Client

pytestmark = pytest.mark.integration

CAP = 100
DEADLINE = 2.0  # --tls-handshake-timeout and --header-timeout
IDLE = 3.0
#: a TLS connection costs ~210-300 KB (docs/benchmarks.md); 400 KB each plus slack for the churn
BUDGET = CAP * 400 * 1024 + 20 * hostile.MB
SELECTOR = f"{VALUES}/default/celery_queue_length?labelSelector=queue%3Danalyses"


@pytest.fixture
def adapter(redis_url: str, adapter_factory: Callable[..., RunningAdapter]) -> RunningAdapter:
    return adapter_factory(
        ["--broker-url", redis_url, "--queue", "analyses", "--poll-interval", "0.5"],
        *("--max-connections", str(CAP), "--tls-handshake-timeout", str(DEADLINE)),
        *("--header-timeout", str(DEADLINE), "--idle-timeout", str(IDLE)),
    )


def anonymous_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def raw(adapter: RunningAdapter, data: bytes, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """Send ``data`` as it is on a new TLS connection; the status and the whole answer."""
    context = context or adapter.client_ssl_context()
    with (
        socket.create_connection(("127.0.0.1", adapter.port), timeout=10) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as sock,
    ):
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    match = hostile.STATUS_LINE.match(answer)
    return (int(match.group(1)) if match else 0), answer


def request(target: bytes, *headers: bytes) -> bytes:
    return (
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
    )


def rejected(client: Client, reason: str) -> float:
    line = f'lensing_adapter_http_rejected_total{{reason="{reason}"}} '
    for text in client.get("/metrics").body.decode().splitlines():
        if text.startswith(line):
            return float(text.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line!r} in /metrics")


def settle(pid: int, target: int, seconds: float = 15.0) -> int:
    deadline = time.monotonic() + seconds
    while (now := hostile.rss(pid)) > target and time.monotonic() < deadline:
        time.sleep(0.25)
    return now


def warm(client: Client) -> None:
    for _ in range(20):
        assert client.get(SELECTOR).status == 200
    time.sleep(0.5)


def test_silent_tls_connections_cost_at_most_the_cap_and_are_returned(
    adapter: RunningAdapter, client_factory: Callable[..., Client]
) -> None:
    warm(client_factory(adapter))
    start = hostile.rss(adapter.process.pid)

    async def attack() -> tuple[int, list[int]]:
        held = await hostile.open_silent_tls(adapter.port, 2000)
        peak = hostile.rss(adapter.process.pid)
        served = [(await asyncio.to_thread(lambda: Client(adapter, adapter.extra["client"]).get(SELECTOR))).status]
        await held.close()
        return peak, served

    peak, served = asyncio.run(attack())
    assert served == [200]  # a normal client is served with 2,000 hostile connections opened before it
    assert peak - start <= BUDGET, f"{(peak - start) / hostile.MB:.0f} MB for {CAP} connections"
    end = settle(adapter.process.pid, start + 10 * hostile.MB)
    assert end <= start + 10 * hostile.MB, f"{start / hostile.MB:.0f} MB at the start, {end / hostile.MB:.0f} MB after"
    client = client_factory(adapter)
    assert rejected(client, "evicted") + rejected(client, "head_timeout") >= 2000 - CAP


def test_connections_that_never_send_a_client_hello_cost_a_socket_and_are_closed(
    adapter: RunningAdapter, client_factory: Callable[..., Client]
) -> None:
    client = client_factory(adapter)
    warm(client)
    start = hostile.rss(adapter.process.pid)
    held = hostile.open_silent_tcp(adapter.port, 2000)
    try:
        time.sleep(0.5)
        peak = hostile.rss(adapter.process.pid)
        assert Client(adapter, adapter.extra["client"]).get(SELECTOR).status == 200
        assert hostile.alive(held) <= CAP
        assert peak - start <= 5 * hostile.MB  # no TLS buffers for a connection that has sent nothing
        time.sleep(DEADLINE + 1.5)
        assert hostile.alive(held) == 0  # the handshake deadline closed the ones let in
    finally:
        asyncio.run(held.close())
    assert rejected(client, "tls_handshake") >= 1


def test_a_flood_of_new_connections_never_closes_a_kept_alive_client(
    adapter: RunningAdapter, client_factory: Callable[..., Client]
) -> None:
    """At the cap, connections that have sent no request byte make room first (oldest first): the HPA's kept-alive
    connection survives any number of newcomers, and evicting one mid-handshake leaves no traceback (a
    socket handed to asyncio is closed by asyncio, not under its transport)."""
    client = client_factory(adapter)
    warm(client)
    connection = client.conn

    async def flood(tls: bool) -> int:
        if tls:
            held = await hostile.open_silent_tls(adapter.port, 3 * CAP)
        else:
            held = await asyncio.to_thread(hostile.open_silent_tcp, adapter.port, 3 * CAP)
        status = (await asyncio.to_thread(client.get, SELECTOR)).status
        await held.close()
        return status

    for tls in (True, False, True):
        assert asyncio.run(flood(tls)) == 200
        assert client.conn is connection, "the kept-alive connection was closed to make room"
    assert rejected(client, "evicted") >= 2 * 3 * CAP
    log = adapter.output()
    assert "Traceback" not in log and "is used by transport" not in log, log[-3000:]


def test_a_slow_request_head_is_cut_at_the_header_timeout(
    adapter: RunningAdapter, client_factory: Callable[..., Client]
) -> None:
    plain = socket.create_connection(("127.0.0.1", adapter.port), timeout=10)
    with adapter.client_ssl_context().wrap_socket(plain, server_hostname="localhost") as sock:
        started = time.monotonic()
        closed_at = None
        for byte in request(SELECTOR.encode()):
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_at = time.monotonic()
                break
            time.sleep(0.2)
            if time.monotonic() - started > DEADLINE + 3:
                break
        if closed_at is None:
            sock.settimeout(2)
            with contextlib.suppress(OSError, ssl.SSLError):
                assert sock.recv(100) == b""
            closed_at = time.monotonic()
    assert closed_at - started <= DEADLINE + 2.5
    assert rejected(client_factory(adapter), "head_timeout") == 1


def test_an_idle_keep_alive_connection_is_closed(adapter: RunningAdapter) -> None:
    plain = socket.create_connection(("127.0.0.1", adapter.port), timeout=IDLE + 5)
    with adapter.client_ssl_context().wrap_socket(plain, server_hostname="localhost") as sock:
        sock.sendall(b"GET " + SELECTOR.encode() + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"
        started = time.monotonic()
        while sock.recv(65536):
            pass
        assert IDLE - 0.5 <= time.monotonic() - started <= IDLE + 2


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (request(b"/apis?" + b"a" * 9000), 431, "header_too_large"),
        (request(b"/apis", b"X-Big: " + b"a" * 9000), 431, "header_too_large"),
        (request(b"/apis", *(b"X-%d: y" % i for i in range(100))), 431, "header_too_large"),
        (request(b"/apis", b"Content-Length: 1000000"), 413, "body_too_large"),
        (b"GET /apis HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n", 400, "bad_request"),
    ],
    ids=["request-line", "header", "header-count", "body", "malformed"],
)
def test_requests_over_the_limits_are_refused_with_a_status(
    adapter: RunningAdapter, client_factory: Callable[..., Client], data: bytes, code: int, reason: str
) -> None:
    status, answer = raw(adapter, data)
    assert status == code
    assert b'"kind":"Status"' in answer and b'"code":%d' % code in answer
    assert rejected(client_factory(adapter), reason) == 1


def test_a_selector_over_the_cap_is_refused(adapter: RunningAdapter, client_factory: Callable[..., Client]) -> None:
    long_selector = "queue+in+(" + ",".join(f"q{i}" for i in range(1200)) + ")"
    reply = client_factory(adapter).get(f"{VALUES}/default/celery_queue_length?labelSelector={long_selector}")
    assert reply.status == 400
    assert "longer than 4096" in reply.json()["message"]


@pytest.mark.parametrize(
    "data",
    [
        request(SELECTOR.encode(), b"Authorization: Bearer abc\xff\xfe"),
        request(b"/apis/\xff"),
        request(SELECTOR.encode() + b"%FF"),
        request(
            b"/apis/external.metrics.k8s.io/v1beta1/namespaces/default/celery_queue_length?labelSelector=queue%3D%C3"
        ),
        request(SELECTOR.encode(), b"X-Remote-User: \xc3\x28"),
    ],
    ids=["bearer-token", "path", "query", "query-truncated", "header"],
)
def test_bytes_that_are_not_utf8_are_a_400(
    adapter: RunningAdapter, client_factory: Callable[..., Client], data: bytes
) -> None:
    for context in (anonymous_context(), None):  # before authentication, and for an authenticated client
        status, answer = raw(adapter, data, context)
        assert status == 400, answer[:300]
        assert b'"kind":"Status"' in answer and b'"code":400' in answer
    assert "Traceback" not in adapter.output()


def test_a_selector_is_percent_decoded_once(adapter: RunningAdapter, client_factory: Callable[..., Client]) -> None:
    client = client_factory(adapter)
    assert client.get(SELECTOR).status == 200
    reply = client.get(f"{VALUES}/default/celery_queue_length?labelSelector=queue%253Danalyses")
    assert reply.status == 400, reply.body  # kube-apiserver: `queue%3Danalyses` is not a selector
    assert "queue%3Danalyses" in reply.json()["message"]


def test_fuzzed_requests_get_no_5xx_and_leave_no_traceback(
    adapter: RunningAdapter, client_factory: Callable[..., Client]
) -> None:
    result = asyncio.run(
        hostile.fuzz(adapter.port, 1500, adapter.client_ssl_context, SELECTOR.split("?")[0], deadline_s=90)
    )
    assert result.sent >= 1000, result
    assert result.server_errors() == {}, result.statuses
    assert result.statuses["200"] > 0 and result.statuses["400"] > 0, result.statuses
    log = adapter.output()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert len(warnings) <= 2, warnings  # rate-limited: one a minute
    assert sum(rejected(client_factory(adapter), r) for r in ("bad_request", "invalid_utf8")) > 0
