"""The HTTPS server: every request parsed once (:class:`ApiRequest`), authenticated, authorized and routed
to discovery, a metrics API group, health or the adapter's own /metrics; errors answered as ``metav1.Status``.

Every answer is JSON whatever the ``Accept`` header says: the HPA controller asks for protobuf first and
takes JSON, kubectl asks for aggregated discovery first and falls back to the plain lists.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from adapter.apiserver.groups import MetricsAPI
from adapter.apiserver.metrics import AdapterStats
from adapter.apiserver.request import ApiRequest
from adapter.apiserver.status import (
    ApiError,
    bad_request,
    entity_too_large,
    forbidden,
    http_layer_error,
    internal_error,
    method_not_allowed,
    not_found,
    service_unavailable,
    unauthorized,
)
from adapter.apiserver.wire import api_group_list, api_group_object, api_resource_list, go_json
from adapter.authn import Authenticator
from adapter.authz import AuthorizationUnavailable, Authorizer, forbidden_message
from adapter.providers.interface import Lifecycle
from lensing_core.net import Limits, Rejections, serve_until

log = logging.getLogger(__name__)

HEALTH_PATHS = ("/healthz", "/livez", "/readyz")
#: a TLS connection costs about 300 KB (asyncio's SSL buffers, docs/benchmarks.md): 384 of them, with the
#: adapter's own ~60 MB, stay under the chart's 256Mi limit
MAX_CONNECTIONS = 384
MAX_BODY_BYTES = 64 * 1024  # the adapter serves GET only: a body is never read
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-cache, private"}


def _kind(path: str) -> str:
    if path.startswith("/apis"):
        return "value" if path.count("/") >= 4 else "discovery"
    if path.startswith(HEALTH_PATHS):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/openapi"):
        return "openapi"
    return "other"


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=go_json(obj), status=status, headers=JSON_HEADERS)


def error_response(error: ApiError) -> web.Response:
    return json_response(error.status(), error.code)


def http_error(code: int, message: str) -> web.Response:
    """A malformed request's answer, as a metav1.Status."""
    return error_response(http_layer_error(code, message))


def _not_utf8(request: web.BaseRequest) -> bool:
    """aiohttp decodes the head with surrogateescape: a byte that is not UTF-8 is a lone surrogate; the
    query is checked percent-decoded, as the selectors will be read."""
    try:
        request.raw_path.encode()
        query = request.rel_url.raw_query_string
        if "%" in query:
            urllib.parse.unquote_to_bytes(query).decode()
        for name, value in request.raw_headers:
            name.decode()
            value.decode()
    except UnicodeError:
        return True
    return False


class AdapterServer:
    def __init__(
        self, apis: Sequence[MetricsAPI], authenticator: Authenticator, authorizer: Authorizer, stats: AdapterStats
    ) -> None:
        self.apis: dict[str, MetricsAPI] = {}
        for api in apis:
            if api.group in self.apis:
                raise ValueError(f"two providers for API group {api.group}")
            self.apis[api.group] = api
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.stats = stats
        self.registry = stats.registry
        self.rejections = Rejections("lensing_adapter_http_rejected_total", logging.getLogger("adapter.http"))
        self.registry.register(self.rejections)
        registered: set[int] = set()
        for collector in self._collectors():
            if id(collector) not in registered:  # a client shared by two providers is scraped once
                registered.add(id(collector))
                self.registry.register(collector)

    def _lifecycles(self) -> list[tuple[str, Lifecycle]]:
        return [(api.group, provider) for api in self.apis.values() for provider in api.providers()]

    def _collectors(self) -> Iterable[Collector]:
        for _group, provider in self._lifecycles():
            yield from provider.collectors()

    # -- plumbing ----------------------------------------------------------------------------------
    def web_server(self) -> web.Server:
        """aiohttp's low-level server: every request goes to :meth:`handle`, which routes itself (no
        router, no middleware chain: the per-request cost stays in the adapter's own code)."""
        return web.Server(self.handle, access_log=None)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        path = request.path
        response: web.StreamResponse
        try:
            self._check(request)
            response = await self._serve(request, ApiRequest(request.method, path, request.rel_url.raw_query_string))
        except ApiError as error:
            response = error_response(error)
            if error.code == 413:  # the body is not read: the connection cannot carry another request
                response.force_close()
        except Exception:  # a bug answers 500 with a one-line Status; the traceback goes to the log only
            log.exception("internal error answering %s %s", request.method, path[:200])
            response = error_response(internal_error("Internal error occurred: see the adapter's log"))
        self.stats.request(response.status, _kind(path), time.perf_counter() - started)
        return response

    def _check(self, request: web.BaseRequest) -> None:
        """What the HTTP parser lets through and the adapter does not take: bytes that are not UTF-8, a body."""
        if _not_utf8(request):
            self.rejections.reject("invalid_utf8", request.remote)
            raise bad_request("the request is not valid UTF-8")
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            self.rejections.reject("body_too_large", request.remote)
            raise entity_too_large(f"a request body of at most {MAX_BODY_BYTES} bytes is accepted")

    async def _serve(self, request: web.BaseRequest, api_request: ApiRequest) -> web.StreamResponse:
        if not self.authorizer.path_always_allowed(api_request.path):
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
            der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
            user = await self.authenticator.authenticate(der, request.headers, request.headers)
            if user is None:
                raise unauthorized()
            info = api_request.info
            try:
                decision = await self.authorizer.authorize(user, info)
            except AuthorizationUnavailable as exc:
                raise service_unavailable(str(exc)) from None
            if not decision.allowed:
                details = {"group": info.api_group, "kind": info.resource} if info.is_resource else None
                if details and info.name:
                    details = {"name": info.name, **details}
                raise forbidden(forbidden_message(user, info, decision.reason), details)
        else:
            self.stats.authz("allow", "always-allow-path")
        if request.method not in ("GET", "HEAD"):
            raise method_not_allowed()
        return await self._route(request, api_request)

    # -- routes ------------------------------------------------------------------------------------
    async def _route(self, request: web.BaseRequest, api_request: ApiRequest) -> web.StreamResponse:
        path = api_request.path
        if path in ("/healthz", "/livez"):
            return web.Response(text="ok")
        if path == "/readyz":
            return self._readyz()
        if path == "/metrics":
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})
        segments = api_request.segments
        if not segments or segments[0] != "apis" or "" in segments[1:]:
            raise not_found()
        if len(segments) == 1:
            return json_response(api_group_list((api.group, api.versions) for api in self.apis.values()))
        api = self.apis.get(segments[1])
        if api is None:
            raise not_found()
        if len(segments) == 2:
            return json_response(api_group_object(api.group, api.versions))
        version = segments[2]
        if version not in api.versions:
            raise not_found()
        if len(segments) == 3:
            return json_response(api_resource_list(api.group, version, api.resources(version)))
        return web.Response(body=await api.get(api_request, version), headers=JSON_HEADERS)

    def _readyz(self) -> web.Response:
        lines, ready = [], True
        for api in self.apis.values():
            reports = [r for r in (p.readiness() for p in api.providers()) if r is not None]
            if not reports:
                continue
            ok = all(r[0] for r in reports)
            ready &= ok
            lines.append(
                f"[{'+' if ok else '-'}]{api.group} {'ok' if ok else 'failed'}: {'; '.join(r[1] for r in reports)}"
            )
        lines.append("readyz check passed" if ready else "readyz check failed")
        return web.Response(status=200 if ready else 503, text="\n".join(lines) + "\n")

    # -- running -----------------------------------------------------------------------------------
    def start_providers(self) -> None:
        for _group, provider in self._lifecycles():
            provider.start()

    def stop_providers(self) -> None:
        for group, provider in self._lifecycles():
            try:
                provider.stop()
            except Exception:
                log.exception("stopping a provider of %s failed", group)

    async def serve(
        self, host: str, port: int, ssl_context: ssl.SSLContext, stop: asyncio.Event, limits: Limits | None = None
    ) -> None:
        runner = web.ServerRunner(self.web_server(), handle_signals=False)
        await serve_until(
            runner,
            host,
            port,
            stop,
            name="adapter",
            url=f"https://{host}:{port}",
            log=log,
            start=self.start_providers,
            shutdown=self.stop_providers,
            ssl_context=ssl_context,
            backlog=1024,
            limits=limits or Limits(max_connections=MAX_CONNECTIONS),
            rejections=self.rejections,
            error_body=http_error,
        )
