"""A throw-away redis-server on loopback (the demo, the benchmarks and the tests start theirs this way)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


def start_redis_server(
    port: int, workdir: str, extra_args: Sequence[str] = (), binary: str = "redis-server"
) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:``port``, persisting nothing, its files in ``workdir``."""
    return subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            *extra_args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
