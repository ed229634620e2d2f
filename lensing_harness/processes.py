"""Stopping the child processes the demo, the tests and the benchmarks start."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def _send(proc: subprocess.Popen[Any], sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def stop_process(
    proc: subprocess.Popen[Any], grace: float = 10.0, *, sig: int = signal.SIGTERM, group: bool = False
) -> None:
    """Send ``sig`` (to the whole process group when ``group``: a Celery worker and its pool) and wait up to
    ``grace`` seconds; then SIGKILL. Nothing to do when it has already exited."""
    if proc.poll() is not None:
        return
    _send(proc, sig, group)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        kill_process(proc, group=group)


def kill_process(proc: subprocess.Popen[Any], *, group: bool = False) -> None:
    """SIGKILL (the whole group when ``group``), as the OOM killer would, and reap it."""
    _send(proc, signal.SIGKILL, group)
    proc.wait(10)
