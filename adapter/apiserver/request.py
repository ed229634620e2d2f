"""A request, parsed once: its path segments, what it asks (``RequestInfo``, as the API server's
``RequestInfoFactory`` parses it, for authorization and for routing) and its label selectors.

Routing, authorization and the groups read these fields; nothing below the server splits a path or
parses a selector again.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from adapter.apiserver.status import bad_request
from adapter.selectors import Selector, SelectorError, parse_selector

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
#: a selector the HPA sends names a few labels; one past this is refused before it is parsed (or cached)
MAX_SELECTOR_BYTES = 4096


@dataclass(frozen=True, slots=True)
class RequestInfo:
    path: str
    verb: str
    is_resource: bool = False
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: tuple[str, ...] = ()  # what follows the version (and namespaces/NAMESPACE, when it names one)


def request_info(method: str, path: str) -> RequestInfo:
    """Split ``/apis/GROUP/VERSION/[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]]``; anything else is a
    non-resource request (discovery, health, metrics)."""
    verb = _VERBS.get(method.upper(), method.lower())
    parts = [p for p in path.split("/") if p]
    if len(parts) < 4 or parts[0] != "apis":
        return RequestInfo(path=path, verb=verb)
    group, version, rest = parts[1], parts[2], parts[3:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if not name and verb == "get":
        verb = "list"
    return RequestInfo(path, verb, True, group, version, namespace, resource, subresource, name, tuple(rest))


class ApiRequest:
    """One request. ``segments`` are the path's, after the leading ``/`` (empty ones kept: a path with
    one is not served); the query string (as sent, still percent-encoded) is decoded once on first use, as
    Go's ``url.ParseQuery`` (``+`` is a space, the first value wins): ``queue%253Dq1`` is ``queue%3Dq1``.
    The routes ask for each selector once and hand it on parsed."""

    def __init__(self, method: str, path: str, query_string: str = "") -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.segments = tuple(path.split("/")[1:])
        self.info = request_info(method, path)

    @functools.cached_property
    def query(self) -> Mapping[str, str]:
        try:
            pairs = parse_qsl(self.query_string, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise bad_request("the query string is not valid UTF-8 once percent-decoded") from None
        return dict(reversed(pairs))

    def selector(self, parameter: str) -> Selector:
        """The parsed ``labelSelector`` or ``metricLabelSelector``; a 400 when it does not parse or is
        longer than MAX_SELECTOR_BYTES."""
        text = self.query.get(parameter, "")
        if len(text) > MAX_SELECTOR_BYTES:
            raise bad_request(f"invalid {parameter}: longer than {MAX_SELECTOR_BYTES} characters")
        try:
            return parse_selector(text)
        except SelectorError as exc:
            raise bad_request(f"invalid {parameter}: {exc}") from None
