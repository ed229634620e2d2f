"""The API machinery shared by every metrics API group: the JSON the API server writes, ``metav1.Status``
errors, discovery objects, and the interface a group's provider implements.

A provider answers for one API group (``external.metrics.k8s.io`` here; ``custom.metrics.k8s.io`` plugs in
the same way): it lists its resources for discovery and answers GETs below ``/apis/GROUP/VERSION/``.
The server does the rest (TLS, authentication, authorization, discovery, errors, metrics).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

from prometheus_client.registry import Collector

_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def go_json(obj: Any) -> bytes:
    """What Go's ``json.Encoder.Encode`` writes: compact, HTML characters escaped, a trailing newline."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES) + "\n").encode()


def rfc3339(timestamp: float) -> str:
    """``metav1.Time`` as JSON: UTC, whole seconds."""
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the server answers as a ``metav1.Status``."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details) if details else None

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        body["details"] = dict(details)
    body["code"] = code
    return body


def not_found(group: str, resource: str, name: str) -> ApiError:
    """``apierrors.NewNotFound(schema.GroupResource{group, resource}, name)``."""
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource}
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


@dataclass(frozen=True, slots=True)
class APIResource:
    """``metav1.APIResource``, with its JSON fields in the Go struct's order."""

    name: str
    kind: str
    namespaced: bool = True
    verbs: tuple[str, ...] = ("get",)
    singular_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "singularName": self.singular_name,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }


class ApiRequest:
    """A GET below ``/apis/GROUP/VERSION/``: the path segments after the version, and the query string
    (parsed on first use of ``query``, as Go's ``url.ParseQuery``: ``+`` is a space, the first value wins)."""

    def __init__(self, version: str, segments: tuple[str, ...], query_string: str = "") -> None:
        self.version = version
        self.segments = segments
        self.query_string = query_string

    @functools.cached_property
    def query(self) -> Mapping[str, str]:
        return dict(reversed(parse_qsl(self.query_string, keep_blank_values=True)))


class GroupProvider(Protocol):
    """One API group's answers. ``versions`` lists the served versions, the preferred one first."""

    group: str
    versions: tuple[str, ...]

    def resources(self, version: str) -> Sequence[APIResource]:
        """Discovery: never empty (an empty list breaks kubectl and helm across the cluster)."""
        ...

    async def get(self, request: ApiRequest) -> dict[str, Any] | bytes:
        """The object to answer with (or its JSON, already encoded with :func:`go_json`);
        raise :class:`ApiError` for anything else."""
        ...

    def collectors(self) -> Iterable[Collector]: ...

    def readiness(self) -> tuple[bool, str]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def group_version(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}", "version": version}


def api_group(provider: GroupProvider) -> dict[str, Any]:
    versions = [group_version(provider.group, v) for v in provider.versions]
    return {"name": provider.group, "versions": versions, "preferredVersion": versions[0]}


def api_group_list(providers: Iterable[GroupProvider]) -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(p) for p in providers]}


def api_group_object(provider: GroupProvider) -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", **api_group(provider)}


def api_resource_list(provider: GroupProvider, version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{provider.group}/{version}",
        "resources": [r.to_json() for r in provider.resources(version)],
    }
