"""Real services for the tests: the machine's Redis and RabbitMQ, private redis-servers, Celery workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

from lensing_harness.localredis import start_redis_server
from lensing_harness.ports import free_port, port_open
from lensing_harness.processes import kill_process, stop_process
from lensing_harness.sample_worker import start_sample_worker

SYSTEM_REDIS = ("127.0.0.1", 6379)
SYSTEM_RABBITMQ = ("127.0.0.1", 5672)
REPO = Path(__file__).resolve().parents[2]
_DB_LOCK = "lensing-metrics-test:db-lock:{}"


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; return that, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def ensure_system_services() -> None:
    """Start the machine's Redis and RabbitMQ where they are not running (as the CI set-up does)."""
    if not port_open(*SYSTEM_REDIS):
        Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
            ],
            check=True,
        )
        wait_for(lambda: port_open(*SYSTEM_REDIS), 15, what="redis on 6379")
    if not port_open(*SYSTEM_RABBITMQ) and shutil.which("rabbitmq-server"):
        subprocess.run(["rabbitmq-server", "-detached"], check=False)
        wait_for(lambda: port_open(*SYSTEM_RABBITMQ), 90, interval=0.5, what="rabbitmq on 5672")


@contextlib.contextmanager
def claimed_redis_db() -> Iterator[int]:
    """A database number of the system Redis that no other test run uses right now (1..15), flushed
    before and after. Runs of the suite in parallel (other checkouts) claim theirs through a lock key."""
    admin = redis.Redis(*SYSTEM_REDIS, db=0)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + 120
    db = None
    while db is None:
        for candidate in range(1, 16):
            if admin.set(_DB_LOCK.format(candidate), token, nx=True, ex=900):
                db = candidate
                break
        else:
            if time.monotonic() > deadline:
                raise RuntimeError("no free Redis database number (1..15) for the test")
            time.sleep(0.5)
    client = redis.Redis(*SYSTEM_REDIS, db=db)
    client.flushdb()
    try:
        yield db
    finally:
        client.flushdb()
        client.close()
        if admin.get(_DB_LOCK.format(db)) == token.encode():
            admin.delete(_DB_LOCK.format(db))
        admin.close()


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A fresh RabbitMQ virtual host (guest has all rights on it), deleted afterwards, so parallel test
    runs never see each other's queues or events."""
    vhost = f"lm-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield vhost
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True)


class RedisServer:
    """A private redis-server on a free port, which a test may stop and start again (same port)."""

    def __init__(self, extra_args: Sequence[str] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="lm-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = start_redis_server(self.port, self.dir, self.extra_args)
        wait_for(lambda: port_open("127.0.0.1", self.port), 10, what=f"redis-server on {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class CeleryWorker:
    """A real `celery worker` process on :mod:`lensing_harness.sample_tasks`."""

    def __init__(
        self,
        broker_url: str,
        queues: Sequence[str] = ("analyses",),
        *,
        concurrency: int = 2,
        events: bool = False,
        prefetch: int = 4,
        acks_late: bool = False,
        hostname: str | None = None,
        transport_options: str = "{}",
        extra_env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.hostname = hostname or f"test-{uuid.uuid4().hex[:8]}@%h"
        self.log = tempfile.NamedTemporaryFile(prefix="lm-worker-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = start_sample_worker(
            broker_url,
            queues,
            hostname=self.hostname,
            log=self.log,
            concurrency=concurrency,
            prefetch=prefetch,
            acks_late=acks_late,
            events=events,
            transport_options=transport_options,
            extra_env=extra_env,
            extra_args=extra_args,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as the OOM killer would."""
        kill_process(self.proc, group=True)

    def stop(self) -> None:
        stop_process(self.proc, 15, group=True)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)
