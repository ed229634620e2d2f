"""`make demo` non-interactively: a short run shows a live backlog and in-flight count, then cleans up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.services import REPO, port_open, wait_for

pytestmark = pytest.mark.integration


def test_demo_shows_running_and_backlog_then_stops_everything() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "lensing_metrics.demo", "--duration", "20", "--burst", "30"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = re.findall(r"^analyses\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", out, re.MULTILINE)
    assert rows, out[-2000:]
    # Celery's default early ack: the running tasks are in no broker count, the backlog has them
    assert any(
        int(waiting) > 0 and int(running) > 0 and int(backlog) >= int(waiting) + int(running)
        for waiting, _inflight, running, backlog in rows
    )
    assert "broker up" in out
    pids = {int(p) for p in re.findall(r"pid (\d+)", out)}
    assert len(pids) == 2  # redis-server and the worker
    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text().lower()


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text().lower()


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_closing_the_terminal_stops_everything_the_demo_started(signum: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"}
    demo = subprocess.Popen(
        [sys.executable, "-u", "-m", "lensing_metrics.demo", "--burst", "5"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "adapter: https://" not in seen and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            seen += line
        adapter = re.search(r"adapter: https://127\.0\.0\.1:(\d+)", seen)
        pids = {int(p) for p in re.findall(r"pid (\d+)", seen)}
        assert adapter and len(pids) == 2, seen
        demo.send_signal(signum)
        demo.wait(timeout=30)
        wait_for(lambda: all(_gone(pid) for pid in pids), 15, what="redis-server and the worker gone")
        wait_for(lambda: not port_open("127.0.0.1", int(adapter.group(1))), 15, what="the adapter gone")
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
