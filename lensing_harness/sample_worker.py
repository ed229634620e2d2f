"""Starts a real `celery worker` on :mod:`lensing_harness.sample_tasks` (the demo's and the tests' worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_sample_worker(
    broker_url: str,
    queues: Sequence[str],
    *,
    hostname: str,
    log: IO[bytes],
    concurrency: int = 2,
    prefetch: int = 4,
    acks_late: bool = False,
    events: bool = False,
    transport_options: str = "{}",
    extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """The worker process, in a process group of its own so that it and its pool stop as a whole."""
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker_url,
        "LENSING_PREFETCH": str(prefetch),
        "LENSING_ACKS_LATE": "1" if acks_late else "0",
        "LENSING_TRANSPORT_OPTIONS": transport_options,
        "PYTHONPATH": REPO,
        **(extra_env or {}),
    }
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "lensing_harness.sample_tasks",
        "worker",
        "--loglevel",
        "WARNING",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "-n",
        hostname,
        "--without-mingle",
        "--without-gossip",
        *(["-E"] if events else []),
        *extra_args,
    ]
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
