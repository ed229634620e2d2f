"""Fixtures for the adapter's tests: a real adapter process (``python -m adapter``), HTTPS requests to it
with client certificates, and kubectl."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapter.pki import Issued
from lensing_harness.adapter_process import RunningAdapter, start_adapter

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".tools" / "bin" / "kubectl"
VALUES = "/apis/external.metrics.k8s.io/v1beta1/namespaces"


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """Kept-alive HTTPS to the adapter with one client identity (or none)."""

    def __init__(self, adapter: RunningAdapter, identity: Issued | None, *, anonymous: bool = False) -> None:
        self.adapter = adapter
        if anonymous:
            self.context = ssl.create_default_context(cafile=str(adapter.serving_cert))
        else:
            self.context = adapter.client_ssl_context(identity)
        self.conn: http.client.HTTPSConnection | None = None

    def get(self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET") -> Reply:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    "127.0.0.1", self.adapter.port, context=self.context, timeout=30
                )
            try:
                self.conn.request(method, path, headers=dict(headers or {}))
                response = self.conn.getresponse()
                return Reply(response.status, dict(response.getheaders()), response.read())
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture
def adapter_factory(tmp_path: Path) -> Iterator[Callable[..., RunningAdapter]]:
    started: list[RunningAdapter] = []

    def make(broker_args: Sequence[str], *extra_args: str, name: str = "adapter", **kwargs: Any) -> RunningAdapter:
        running = start_adapter(tmp_path / name, broker_args, extra_args=extra_args, **kwargs)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def client_factory() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(adapter: RunningAdapter, identity: Issued | None = None, **kwargs: Any) -> Client:
        client = Client(adapter, identity, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def kubectl(kubeconfig: Path, *args: str, cache_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    cache = ["--cache-dir", str(cache_dir)] if cache_dir else []
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), *cache, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
