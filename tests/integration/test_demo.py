"""`make demo` non-interactively: a short run shows a live backlog and in-flight count, then cleans up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import REPO

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
