"""The exporter's HTTP endpoints: /metrics (Prometheus text or OpenMetrics), /healthz, /readyz."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client.registry import Collector

from exporter.exposition import render

Readiness = Callable[[], Sequence[tuple[str, bool, str]]]


def build_app(collectors: Sequence[Collector], readiness: Readiness) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        body, content_type = render(collectors, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        checks = list(readiness())
        ready = all(ok for _name, ok, _why in checks)
        lines = [f"{'ok' if ok else 'FAIL'} {name}: {why}" for name, ok, why in checks]
        return web.Response(status=200 if ready else 503, text="\n".join(lines) + "\n")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(
            text="lensing-metrics exporter\n/metrics  Prometheus metrics\n/healthz  liveness\n/readyz   readiness\n"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", index)
    return app
