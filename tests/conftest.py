"""Shared fixtures. With CI=true a skipped test fails the run: the set-up must install what tests need."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane, ControlPlaneError, k8s_bin_dir
from tests.support.services import (
    CeleryWorker,
    RedisServer,
    claimed_redis_db,
    ensure_system_services,
    rabbitmq_vhost,
)

_skipped: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    ensure_system_services()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() == "true" and _skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if os.environ.get("CI", "").lower() == "true" and _skipped:
        terminalreporter.write_line(f"CI=true: {len(_skipped)} skipped test(s) count as failures:", red=True)
        for nodeid in _skipped:
            terminalreporter.write_line(f"  {nodeid}", red=True)


@pytest.fixture(autouse=True)
def _fresh_kombu_pools() -> Iterator[None]:
    """kombu keeps producer connections, and the queues they declared, in process-wide pools keyed by
    URL. A test that reuses a database number another test flushed would then skip declaring its queues."""
    yield
    import kombu.pools

    kombu.pools.reset()


@pytest.fixture
def redis_db() -> Iterator[int]:
    """A database number on the machine's Redis (127.0.0.1:6379) that this test alone uses."""
    with claimed_redis_db() as db:
        yield db


@pytest.fixture
def redis_url(redis_db: int) -> str:
    return f"redis://127.0.0.1:6379/{redis_db}"


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A broker URL on the machine's RabbitMQ, in a virtual host of this test's own."""
    with rabbitmq_vhost() as vhost:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


@pytest.fixture
def redis_server() -> Iterator[Callable[..., RedisServer]]:
    """Factory of private redis-servers (a test may stop and restart them); all closed at the end."""
    servers: list[RedisServer] = []

    def make(*extra_args: str) -> RedisServer:
        server = RedisServer(extra_args).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def celery_worker() -> Iterator[Callable[..., CeleryWorker]]:
    """Factory of real Celery workers on lensing_harness.sample_tasks; all stopped at the end."""
    workers: list[CeleryWorker] = []

    def make(broker_url: str, **kwargs: object) -> CeleryWorker:
        worker = CeleryWorker(broker_url, **kwargs)  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager, started once per session when a test asks for them
    (tests/support/controlplane.py); the admin kubeconfig is ``control_plane.admin_kubeconfig``."""
    bin_dir = k8s_bin_dir()
    if bin_dir is None:
        pytest.skip("the control plane is not built: run scripts/build-k8s.sh (make tools does)")
    workdir = Path(tempfile.mkdtemp(prefix="lm-controlplane-"))
    plane = ControlPlane(workdir, bin_dir)
    try:
        plane.start()
    except ControlPlaneError as exc:
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"the control plane did not start: {exc}")
    try:
        yield plane
    finally:
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test that used the control plane (directly or through a fixture holding it as ``plane``)
    carries the tails of the components' logs."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            plane = value if isinstance(value, ControlPlane) else getattr(value, "plane", None)
            if isinstance(plane, ControlPlane):
                report.sections.append(("control plane logs", plane.logs()))
                break
    return report
