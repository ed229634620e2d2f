"""The HTTPS server: routing, authentication and authorization of every request, discovery for every
registered API group, ``metav1.Status`` errors, health and the adapter's own /metrics.

Every answer is JSON whatever the ``Accept`` header says: the HPA controller asks for protobuf first and
takes JSON, kubectl asks for aggregated discovery first and falls back to the plain lists.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from adapter.api import (
    ApiError,
    ApiRequest,
    GroupProvider,
    api_group_list,
    api_group_object,
    api_resource_list,
    go_json,
    status_body,
)
from adapter.authn import Authenticator
from adapter.authz import AuthorizationUnavailable, Authorizer, forbidden_message
from adapter.metrics import AdapterStats, StatsCollector
from lensing_core.net import serve_until

log = logging.getLogger(__name__)

HEALTH_PATHS = ("/healthz", "/livez", "/readyz")
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-cache, private"}


def _not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


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


class AdapterServer:
    def __init__(
        self,
        providers: Sequence[GroupProvider],
        authenticator: Authenticator,
        authorizer: Authorizer,
        stats: AdapterStats,
    ) -> None:
        self.providers: dict[str, GroupProvider] = {}
        for provider in providers:
            if provider.group in self.providers:
                raise ValueError(f"two providers for API group {provider.group}")
            self.providers[provider.group] = provider
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.stats = stats
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(stats))
        for provider in providers:
            for collector in provider.collectors():
                self.registry.register(collector)

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
            response = await self._serve(request, path)
        except ApiError as error:
            response = error_response(error)
        except Exception:  # a bug answers 500 with a one-line Status; the traceback goes to the log only
            log.exception("internal error answering %s %s", request.method, path[:200])
            response = json_response(
                status_body(500, "InternalError", "Internal error occurred: see the adapter's log"), 500
            )
        self.stats.request(response.status, _kind(path), time.perf_counter() - started)
        return response

    async def _serve(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        if not self.authorizer.path_always_allowed(path):
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
            der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
            user = await self.authenticator.authenticate(der, request.headers, request.headers)
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            try:
                decision, info = await self.authorizer.authorize_request(user, request.method, path)
            except AuthorizationUnavailable as exc:
                raise ApiError(503, "ServiceUnavailable", str(exc)) from None
            if not decision.allowed:
                details = {"group": info.api_group, "kind": info.resource} if info.is_resource else None
                if details and info.name:
                    details = {"name": info.name, **details}
                raise ApiError(403, "Forbidden", forbidden_message(user, info, decision.reason), details)
        else:
            self.stats.authz("allow", "always-allow-path")
        if request.method not in ("GET", "HEAD"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        return await self._route(request, path)

    # -- routes ------------------------------------------------------------------------------------
    async def _route(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        if path in ("/healthz", "/livez"):
            return web.Response(text="ok")
        if path == "/readyz":
            return self._readyz()
        if path == "/metrics":
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})
        segments = path.split("/")[1:]
        if not segments or segments[0] != "apis" or "" in segments[1:]:
            raise _not_found()
        if len(segments) == 1:
            return json_response(api_group_list(self.providers.values()))
        provider = self.providers.get(segments[1])
        if provider is None:
            raise _not_found()
        if len(segments) == 2:
            return json_response(api_group_object(provider))
        version = segments[2]
        if version not in provider.versions:
            raise _not_found()
        if len(segments) == 3:
            return json_response(api_resource_list(provider, version))
        answer = await provider.get(ApiRequest(version, tuple(segments[3:]), request.query_string))
        if isinstance(answer, bytes):
            return web.Response(body=answer, headers=JSON_HEADERS)
        return json_response(answer)

    def _readyz(self) -> web.Response:
        lines, ready = [], True
        for provider in self.providers.values():
            ok, why = provider.readiness()
            ready &= ok
            lines.append(f"[{'+' if ok else '-'}]{provider.group} {'ok' if ok else 'failed'}: {why}")
        lines.append("readyz check passed" if ready else "readyz check failed")
        return web.Response(status=200 if ready else 503, text="\n".join(lines) + "\n")

    # -- running -----------------------------------------------------------------------------------
    def start_providers(self) -> None:
        for provider in self.providers.values():
            provider.start()

    def stop_providers(self) -> None:
        for provider in self.providers.values():
            try:
                provider.stop()
            except Exception:
                log.exception("stopping %s failed", provider.group)

    async def serve(self, host: str, port: int, ssl_context: ssl.SSLContext, stop: asyncio.Event) -> None:
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
        )
