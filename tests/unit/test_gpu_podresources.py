"""Pod labels from the kubelet's pod-resources API, against a real gRPC server on a unix socket."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from prometheus_client.registry import CollectorRegistry

from exporter.collectors.gpu import GpuCollector
from exporter.sources import gpu
from lensing_sources.gpu.podresources import PodResourcesClient, parse_list_response
from tests.support.fake_nvml import FakeNvml, tesla_t4


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def pod(name: str, namespace: str, *containers: tuple[str, str, list[str]]) -> bytes:
    """A PodResources message; containers as (name, resource_name, device_ids)."""
    body = _field(1, name) + _field(2, namespace)
    for container, resource, ids in containers:
        devices = _field(1, resource) + b"".join(_field(2, i) for i in ids) + _field(3, _field(1, b"\x08\x00"))
        body += _field(3, _field(1, container) + _field(2, devices) + b"\x18\x04")  # + cpu_ids varint field
    return _field(1, body)


class Kubelet:
    """A gRPC server answering v1.PodResourcesLister/List with ``self.reply``, on a unix socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.reply = b""
        self.calls = 0
        handler = grpc.method_handlers_generic_handler(
            "v1.PodResourcesLister",
            {
                "List": grpc.unary_unary_rpc_method_handler(
                    self._list, request_deserializer=lambda b: b, response_serializer=lambda b: b
                )
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"unix://{path}")
        self.server.start()

    def _list(self, request: bytes, context: object) -> bytes:
        assert request == b""
        self.calls += 1
        return self.reply

    def stop(self) -> None:
        self.server.stop(grace=None).wait()


@pytest.fixture
def kubelet() -> Iterator[Kubelet]:
    directory = tempfile.mkdtemp(prefix="lm-kubelet-", dir="/tmp")  # unix socket paths are short
    server = Kubelet(str(Path(directory) / "kubelet.sock"))
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


T4 = [tesla_t4(0), tesla_t4(1), tesla_t4(2)]


def test_parse_picks_gpus_strips_time_slice_suffix_and_joins_shared_owners() -> None:
    reply = (
        pod("worker-a", "lensing", ("worker", "nvidia.com/gpu", [T4[0].uuid]), ("sidecar", "cpu", ["x"]))
        + pod("worker-b", "lensing", ("worker", "nvidia.com/gpu", [f"{T4[1].uuid}::0"]))
        + pod("notebook", "science", ("main", "nvidia.com/gpu", [f"{T4[1].uuid}::1"]))
        + pod("no-gpu", "lensing", ("api", "example.com/foo", ["dev0"]))
    )
    assert parse_list_response(reply) == {
        T4[0].uuid: ("worker-a", "lensing", "worker"),
        T4[1].uuid: ("notebook,worker-b", "lensing,science", "main,worker"),
    }


def test_gpu_series_get_pod_labels_and_lose_them_when_the_kubelet_is_gone(kubelet: Kubelet) -> None:
    kubelet.reply = pod("worker-7f9c", "lensing", ("worker", "nvidia.com/gpu", [T4[1].uuid]))
    fake = FakeNvml(list(T4[:2]))
    args = argparse.Namespace(gpu="auto", gpu_pod_resources_socket=kubelet.path, gpu_idle_threshold=0.05)
    source = gpu.build_source(args, nvml=fake)
    assert source is not None
    sampler = source.sampler  # type: ignore[attr-defined]
    assert isinstance(sampler.allocations, PodResourcesClient)
    sampler.allocations.refresh = 0.0
    sampler.allocations.keep_for = 0.0
    for card in fake.gpus:
        card.run(1_700_000_000_000_000, 1.0, 0)
    sampler.sample_once()
    for card in fake.gpus:
        card.run(1_700_000_001_000_000, 3.0, 0, period_us=1_000_000)  # idle, no processes
    sampler.sample_once()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuCollector(sampler))
    base1 = {"gpu": "1", "uuid": T4[1].uuid, "model": "Tesla T4"}
    base0 = {"gpu": "0", "uuid": T4[0].uuid, "model": "Tesla T4"}
    allocated = {**base1, "pod": "worker-7f9c", "namespace": "lensing", "container": "worker"}
    free = {**base0, "pod": "", "namespace": "", "container": ""}
    assert registry.get_sample_value("gpu_memory_total_bytes", allocated) is not None
    assert registry.get_sample_value("gpu_memory_total_bytes", free) is not None
    # allocated to a pod and idle: priced as waste even though no process holds the GPU
    assert registry.get_sample_value("gpu_idle_allocated_seconds_total", allocated) == pytest.approx(3.0)
    assert registry.get_sample_value("gpu_idle_allocated_seconds_total", free) == 0

    kubelet.stop()  # the kubelet restarts: labels go (no stale owner), GPU series stay, the fault is counted
    sampler.sample_once()
    assert registry.get_sample_value("gpu_memory_total_bytes", base1) is not None
    assert registry.get_sample_value("nvml_errors_total", {"reason": "pod_resources"}) == 1
    source.stop()


def test_without_grpcio_or_socket_there_are_no_pod_labels(
    kubelet: Kubelet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeNvml(list(T4[:1]))
    args = argparse.Namespace(gpu="on", gpu_pod_resources_socket="/nonexistent/kubelet.sock")
    assert gpu.build_source(args, nvml=fake).sampler.allocations is None  # type: ignore[union-attr]
    monkeypatch.setitem(sys.modules, "grpc", None)  # import grpc -> ImportError
    args = argparse.Namespace(gpu="on", gpu_pod_resources_socket=kubelet.path)
    source = gpu.build_source(args, nvml=FakeNvml(list(T4[:1])))
    assert source is not None and source.sampler.allocations is None  # type: ignore[attr-defined]
    assert "grpcio is not installed" in caplog.text
    assert source.sampler.sample_once().up  # type: ignore[attr-defined]
