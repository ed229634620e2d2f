"""Stand-ins for the sources the dashboards read that cannot run on a machine without Kubernetes or a GPU.

Used by scripts/render-dashboards.py so that every panel is drawn from numbers produced by running code:

- ``gpu-exporter`` (``python -m tests.support.standins gpu-exporter``): the real `lensing-metrics exporter
  --gpu on`, with the fake NVML of tests/support/fake_nvml.py injected in place of pynvml: two Tesla T4s,
  each holding a CUDA context of one pool process of the real Celery worker, busy while that process runs
  a task (read from the task files the worker's exporter.gpu.celery_hook writes); a pretend kubelet gives
  each card a worker pod. Utilization, memory, temperature and power are the fake card's, not a GPU's.
- :class:`ApiStandin`: a pretend lensing API, a few aiohttp "pods" on loopback, each counting the
  requests it really serves (``http_requests_total``, ``http_request_duration_seconds``), under a client
  that sends a steady stream of requests; the handlers' work is a sleep, and a small fraction answer 500.
- :class:`HpaStandin`: HPA-like reads of ``celery_queue_length`` from the real adapter (each second, as
  kubectl would), the worker HPA's decision every 15 s (lensing_harness.adapter_process.hpa_desired_replicas), and a
  kube-state-metrics stand-in serving ``kube_horizontalpodautoscaler_*`` for that HPA.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import random
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

GiB = 1024**3
HPA_NAME = "lensing-celery-worker-hpa"


class _LoopThread:
    """An asyncio loop in a daemon thread that runs aiohttp servers and background coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Awaitable[Any]) -> Any:
        async def wrap() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(30)

    def serve(self, app: web.Application, port: int) -> None:
        async def start() -> None:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self._runners.append(runner)

        self.call(start())

    def spawn(self, factory: Callable[[], Awaitable[None]]) -> None:
        async def start() -> None:
            self._tasks.append(asyncio.ensure_future(factory()))

        self.call(start())

    def stop(self) -> None:
        async def cleanup() -> None:
            for task in self._tasks:
                task.cancel()
            for runner in self._runners:
                await runner.cleanup()

        with contextlib.suppress(Exception):
            self.call(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def _metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    return metrics


# handler -> (method, share of the traffic, median latency in seconds)
API_ROUTES = {
    "/api/lenses": ("GET", 0.55, 0.025),
    "/api/analyses": ("POST", 0.15, 0.12),
    "/api/analyses/{id}": ("GET", 0.30, 0.015),
}


class ApiStandin:
    """A pretend lensing API: ``pods`` aiohttp servers (one port each; Prometheus adds the pod label) and a
    client sending about ``rate`` requests per second spread over them; ``error_ratio`` of answers are 500."""

    def __init__(self, pods: int = 3, rate: float = 12.0, error_ratio: float = 0.01, seed: int = 6) -> None:
        from tests.support.services import free_port

        self.random = random.Random(seed)
        self.error_ratio = error_ratio
        self.rate = rate
        self.loop = _LoopThread()
        self.ports = [free_port() for _ in range(pods)]
        for port in self.ports:
            self.loop.serve(self._app(), port)
        self.loop.spawn(self._client)

    def _app(self) -> web.Application:
        registry = CollectorRegistry()
        requests = Counter("http_requests", "Requests served.", ["method", "handler", "status"], registry=registry)
        duration = Histogram(
            "http_request_duration_seconds",
            "Time to serve a request.",
            ["method", "handler"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

        def route(handler: str, median: float) -> Callable[[web.Request], Awaitable[web.Response]]:
            async def serve(request: web.Request) -> web.Response:
                started = time.perf_counter()
                await asyncio.sleep(median * self.random.lognormvariate(0, 0.5))  # the pretend work
                status = 500 if self.random.random() < self.error_ratio else 200
                requests.labels(request.method, handler, str(status)).inc()
                duration.labels(request.method, handler).observe(time.perf_counter() - started)
                return web.json_response({}, status=status)

            return serve

        app = web.Application()
        for handler, (method, _, median) in API_ROUTES.items():
            app.router.add_route(method, handler, route(handler, median))
        app.router.add_get("/metrics", _metrics_handler(registry))
        return app

    async def _client(self) -> None:
        routes = list(API_ROUTES.items())
        weights = [share for _, (_, share, _) in routes]
        pending: set[asyncio.Future[None]] = set()
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:

            async def one(url: str, method: str) -> None:
                with contextlib.suppress(Exception):
                    async with session.request(method, url) as response:
                        await response.read()

            while True:
                await asyncio.sleep(self.random.expovariate(self.rate))
                handler, (method, _, _) = self.random.choices(routes, weights)[0]
                port = self.random.choice(self.ports)
                path = handler.replace("{id}", str(self.random.randrange(1, 500)))
                task = asyncio.ensure_future(one(f"http://127.0.0.1:{port}{path}", method))
                pending.add(task)
                task.add_done_callback(pending.discard)

    def stop(self) -> None:
        self.loop.stop()


class HpaStandin:
    """Reads ``celery_queue_length`` of ``queues`` from the running adapter each second (as the HPA would),
    decides the worker HPA's replicas every ``sync_period`` seconds, and serves them as kube-state-metrics
    would on ``port``. The HPA's current replicas follow its desired count one sync later (pods starting)."""

    def __init__(self, adapter: Any, queues: list[str], namespace: str, sync_period: float = 15.0) -> None:
        from lensing_harness.adapter_process import HPA_MAX_REPLICAS, HPA_MIN_REPLICAS, value_path
        from tests.support.services import free_port

        self.adapter, self.queues, self.namespace = adapter, queues, namespace
        self.paths = [value_path(namespace, "celery_queue_length", queue) for queue in queues]
        self.min_replicas, self.max_replicas = HPA_MIN_REPLICAS, HPA_MAX_REPLICAS
        self.current = self.desired = HPA_MIN_REPLICAS
        self.sync_period = sync_period
        self.reads = 0
        self.port = free_port()
        self._stop = threading.Event()
        self._context: ssl.SSLContext = adapter.client_ssl_context()
        self.loop = _LoopThread()
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.loop.serve(app, self.port)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    async def _metrics(self, _request: web.Request) -> web.Response:
        labels = f'namespace="{self.namespace}",horizontalpodautoscaler="{HPA_NAME}"'
        lines = []
        for name, value in (
            ("status_current_replicas", self.current),
            ("status_desired_replicas", self.desired),
            ("spec_max_replicas", self.max_replicas),
            ("spec_min_replicas", self.min_replicas),
        ):
            lines += [f"# TYPE kube_horizontalpodautoscaler_{name} gauge"]
            lines += [f"kube_horizontalpodautoscaler_{name}{{{labels}}} {value}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def _total(self, conn: http.client.HTTPSConnection) -> Decimal | None:
        from adapter.quantity import parse_quantity

        total = Decimal(0)
        for path in self.paths:
            conn.request("GET", path)
            response = conn.getresponse()
            body = json.loads(response.read())
            self.reads += 1
            if response.status != 200:
                return None  # the HPA keeps its replicas when the metric cannot be read
            total += sum((parse_quantity(str(item["value"])) for item in body["items"]), Decimal(0))
        return total

    def _run(self) -> None:
        from lensing_harness.adapter_process import hpa_desired_replicas

        conn = http.client.HTTPSConnection("127.0.0.1", self.adapter.port, context=self._context, timeout=5)
        next_sync = time.monotonic() + self.sync_period
        total: Decimal | None = None
        while not self._stop.wait(1.0):
            try:
                total = self._total(conn)
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                conn = http.client.HTTPSConnection("127.0.0.1", self.adapter.port, context=self._context, timeout=5)
                total = None
            if time.monotonic() >= next_sync:
                next_sync += self.sync_period
                self.current = self.desired
                if total is not None:
                    self.desired = hpa_desired_replicas(self.current, total)
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.loop.stop()


# --- the GPU exporter on the fake NVML ------------------------------------------------------------------


class _PretendKubelet:
    """What the kubelet's pod-resources API would say: card i is allocated to pod ``pods[i]``."""

    def __init__(self, allocations: dict[str, tuple[str, str, str]]) -> None:
        self.allocations = allocations

    def by_uuid(self) -> dict[str, tuple[str, str, str]]:
        return dict(self.allocations)


def _drive(cards: list[Any], pids: list[int], task_dir: Path, stop: threading.Event) -> None:
    """Each card is busy (95 %) while its pool process runs a task, else idle with the context held."""
    now = int(time.time() * 1_000_000)
    while not stop.wait(0.5):
        running = {int(f.name.split("-")[0]) for f in task_dir.glob("*.json")} if task_dir.exists() else set()
        for card, pid in zip(cards, pids, strict=False):
            busy = pid in running
            percent = 95 if busy else 0
            card.util_gpu, card.util_memory = percent, (40 if busy else 0)
            card.processes = [(pid, (5 if busy else 1) * GiB)]
            card.memory_used = (5 if busy else 1) * GiB + 300 * 1024 * 1024
            target = 62 if busy else 38  # the card warms and cools a degree per half second
            card.temperature += (card.temperature < target) - (card.temperature > target)
            card.power_mw = 68_000 if busy else 17_000
            card.sm_clock_mhz = 1590 if busy else 300
            card.throttle_reasons = 0x0 if busy else 0x1  # GpuIdle
        end = int(time.time() * 1_000_000)
        for card, pid in zip(cards, pids, strict=False):
            card.run(now, (end - now) / 1_000_000, 95 if pid in running else 0)
        now = end


def gpu_exporter(argv: list[str]) -> int:
    """`lensing-metrics exporter --gpu on ...` with the fake NVML; --pids and --pods name the pool processes
    and pods holding cards 0, 1, ...; --task-dir is where the worker's hook writes its task files."""
    parser = argparse.ArgumentParser(prog="standins gpu-exporter")
    parser.add_argument("--pids", required=True, help="comma-separated pool process ids, one per card")
    parser.add_argument("--pods", required=True, help="comma-separated pod names, one per card")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--task-dir", required=True, type=Path)
    own, rest = parser.parse_known_args(argv)
    pids = [int(p) for p in own.pids.split(",")]
    pods = own.pods.split(",")

    import lensing_sources.gpu
    from lensing_metrics.cli import main
    from tests.support.fake_nvml import FakeNvml, tesla_t4

    fake = FakeNvml([tesla_t4(i) for i in range(len(pids))])
    kubelet = _PretendKubelet(
        {card.uuid: (pod, own.namespace, "worker") for card, pod in zip(fake.gpus, pods, strict=False)}
    )
    real_build = lensing_sources.gpu.build_source

    def build_source(args: argparse.Namespace, nvml: Any = None) -> Any:
        source: Any = real_build(args, nvml=fake)
        if source is not None:
            source.sampler.allocations = kubelet
        return source

    lensing_sources.gpu.build_source = build_source
    stop = threading.Event()
    threading.Thread(target=_drive, args=(fake.gpus, pids, own.task_dir, stop), daemon=True).start()
    try:
        return main(["exporter", "--gpu", "on", "--gpu-task-dir", str(own.task_dir), *rest])
    finally:
        stop.set()


if __name__ == "__main__":
    if sys.argv[1:2] != ["gpu-exporter"]:
        sys.exit("usage: python -m tests.support.standins gpu-exporter --pids P,P --pods N,N --namespace NS ...")
    sys.exit(gpu_exporter(sys.argv[2:]))
