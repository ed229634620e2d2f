"""Issue 15, findings 1 and 4 for the exporter: idle connections are capped and closed, memory stays
within the cap's budget and comes back, malformed requests are one counted line, never a traceback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lensing_harness import hostile
from lensing_harness.processes import stop_process
from tests.support.services import REPO, free_port, port_open, wait_for

pytestmark = pytest.mark.integration

CAP = 100
DEADLINE = 2.0


class Exporter:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def rejected(self, reason: str) -> float:
        line = f'lensing_exporter_http_rejected_total{{reason="{reason}"}} '
        return next(float(t.rsplit(" ", 1)[1]) for t in self.scrape().splitlines() if t.startswith(line))


@pytest.fixture
def exporter(redis_url: str, tmp_path: Path) -> Iterator[Exporter]:
    port = free_port()
    log = tmp_path / "exporter.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "exporter", "--broker-url", redis_url, "--queue", "analyses"),
                *("--listen", f"127.0.0.1:{port}", "--max-connections", str(CAP)),
                *("--header-timeout", str(DEADLINE), "--idle-timeout", "3"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_for(lambda: port_open("127.0.0.1", port), 20, what="exporter port")
        yield Exporter(process, port, log)
    finally:
        stop_process(process)


def test_idle_connections_are_capped_closed_and_their_memory_returned(exporter: Exporter) -> None:
    for _ in range(20):
        exporter.scrape()
    time.sleep(0.5)
    start = hostile.rss(exporter.process.pid)
    held = hostile.open_silent_tcp(exporter.port, 2000)
    try:
        time.sleep(0.5)
        peak = hostile.rss(exporter.process.pid)
        assert "celery_queue_length" in exporter.scrape()  # a scrape is served throughout
        assert hostile.alive(held) <= CAP
        assert peak - start <= CAP * 100 * 1024 + 10 * hostile.MB
        time.sleep(DEADLINE + 1.5)
        assert hostile.alive(held) == 0  # the head deadline closed the ones let in
    finally:
        asyncio.run(held.close())
    deadline = time.monotonic() + 10
    while hostile.rss(exporter.process.pid) > start + 10 * hostile.MB and time.monotonic() < deadline:
        time.sleep(0.25)
    assert hostile.rss(exporter.process.pid) <= start + 10 * hostile.MB
    assert exporter.rejected("evicted") >= 2000 - CAP - 50
    assert exporter.rejected("head_timeout") >= 1


def test_malformed_requests_are_counted_and_leave_no_traceback(exporter: Exporter) -> None:
    result = asyncio.run(hostile.fuzz(exporter.port, 600, None, "/metrics", deadline_s=60))
    assert result.server_errors() == {}, result.statuses
    assert result.statuses["200"] > 0 and result.statuses["400"] > 0, result.statuses
    for data, code in (
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
        (b"\xff\r\n\r\n", b"400"),
    ):
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as sock:
            sock.sendall(data)
            assert sock.recv(12)[9:12] == code
    log = exporter.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert len([line for line in log.splitlines() if "WARNING" in line]) <= 2
    assert exporter.rejected("bad_request") > 0 and exporter.rejected("header_too_large") >= 1
