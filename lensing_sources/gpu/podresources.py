"""Which pod each GPU is allocated to, from the kubelet's pod-resources API (gRPC ``v1.PodResourcesLister/List``
on ``/var/lib/kubelet/pod-resources/kubelet.sock``, mounted read-only into the exporter).

Optional: it needs ``grpcio`` (``pip install lensing-metrics[gpu-pods]``). Without grpcio or without the
socket, GPU series carry no pod labels and everything else works. The reply is decoded by hand (five
message types, three field kinds), so no generated protobuf code or protobuf runtime is needed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
LIST_METHOD = "/v1.PodResourcesLister/List"
GPU_RESOURCE_PREFIX = "nvidia.com/"

Allocation = tuple[str, str, str]  # (pod, namespace, container)


class DecodeError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of one protobuf message: bytes for length-delimited fields, int for varints."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise DecodeError("truncated field")
            yield number, data[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")


def _message(data: bytes) -> dict[int, list[bytes]]:
    """The length-delimited fields of one message (strings and sub-messages), by field number."""
    fields: dict[int, list[bytes]] = {}
    for number, value in _fields(data):
        if isinstance(value, bytes):
            fields.setdefault(number, []).append(value)
    return fields


def _text(fields: dict[int, list[bytes]], number: int) -> str:
    values = fields.get(number)
    return values[-1].decode("utf-8", "replace") if values else ""


def parse_list_response(data: bytes) -> dict[str, Allocation]:
    """GPU UUID -> (pod, namespace, container) from a ListPodResourcesResponse.

    ListPodResourcesResponse{1: PodResources*}; PodResources{1: name, 2: namespace, 3: ContainerResources*};
    ContainerResources{1: name, 2: ContainerDevices*}; ContainerDevices{1: resource_name, 2: device_ids*}.
    The NVIDIA device plugin names devices by GPU UUID (``GPU-...``, with ``::N`` for time-sliced replicas).
    """
    owners: dict[str, set[Allocation]] = {}
    for pod in map(_message, _message(data).get(1, [])):
        for container in map(_message, pod.get(3, [])):
            owner = (_text(pod, 1), _text(pod, 2), _text(container, 1))
            for device in map(_message, container.get(2, [])):
                if not _text(device, 1).startswith(GPU_RESOURCE_PREFIX):
                    continue
                for device_id in device.get(2, []):
                    uuid = device_id.decode("utf-8", "replace").partition("::")[0]
                    owners.setdefault(uuid, set()).add(owner)
    # a time-sliced GPU shared by several containers: one series, the owners joined
    return {
        uuid: (
            ",".join(sorted({o[0] for o in found})),
            ",".join(sorted({o[1] for o in found})),
            ",".join(sorted({o[2] for o in found})),
        )
        for uuid, found in owners.items()
    }


class PodResourcesClient:
    """Asks the kubelet at most every ``refresh`` seconds; keeps the last answer for ``keep_for`` seconds
    while the kubelet does not answer, then drops it (better no pod label than a wrong one)."""

    def __init__(
        self, socket_path: str, *, refresh: float = 10.0, keep_for: float = 60.0, timeout: float = 3.0
    ) -> None:
        import grpc

        self.socket_path = socket_path
        self.refresh = refresh
        self.keep_for = keep_for
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._list: Callable[..., dict[str, Allocation]] = self._channel.unary_unary(
            LIST_METHOD,
            request_serializer=lambda _request: b"",  # ListPodResourcesRequest has no fields
            response_deserializer=parse_list_response,
        )
        self._lock = threading.Lock()
        self._last: dict[str, Allocation] | None = None
        self._last_at = 0.0
        self._tried_at = float("-inf")

    def by_uuid(self) -> dict[str, Allocation]:
        with self._lock:
            now = time.monotonic()
            if now - self._tried_at < self.refresh and self._last is not None:
                return self._last
            self._tried_at = now
            try:
                self._last = self._list(None, timeout=self.timeout)
                self._last_at = now
                return self._last
            except Exception:
                if self._last is not None and now - self._last_at <= self.keep_for:
                    return self._last
                self._last = None
                raise

    def close(self) -> None:
        self._channel.close()


def open_client(socket_path: str) -> Any:
    """A client when the socket is there and grpcio is installed, else None (said once in the log)."""
    if not socket_path or not os.path.exists(socket_path):
        log.debug("no kubelet pod-resources socket at %r: GPU series carry no pod labels", socket_path)
        return None
    try:
        return PodResourcesClient(socket_path)
    except ImportError:
        log.warning(
            "kubelet pod-resources socket %s is mounted but grpcio is not installed "
            "(pip install 'lensing-metrics[gpu-pods]'): GPU series carry no pod labels",
            socket_path,
        )
        return None
