"""The GPU source inside the real exporter (HTTP /metrics), beside the broker source on the real Redis."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from celery import Celery

from exporter.app import Exporter
from exporter.cli import build_parser, build_sources
from exporter.sources import gpu
from tests.support.fake_nvml import FakeNvml, tesla_t4
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


async def serve_and_scrape(exporter: Exporter, port: int, *needles: str) -> str:
    stop = asyncio.Event()
    server = asyncio.create_task(exporter.serve("127.0.0.1", port, stop))
    try:
        return await asyncio.to_thread(
            wait_for,
            lambda: (text := _try_scrape(port)) and all(n in text for n in needles) and text,
            30,
            0.1,
            " and ".join(needles),
        )
    finally:
        stop.set()
        await server


def _try_scrape(port: int) -> str:
    try:
        return scrape(port)
    except OSError:
        return ""


@pytest.mark.parametrize("nvml_state", ["present", "library missing"])
def test_metrics_endpoint_serves_gpu_and_queue_series(redis_url: str, nvml_state: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    Celery("producer", broker=redis_url).send_task("lensing.analyse_lens", args=[1], queue="analyses")
    fake = FakeNvml([tesla_t4(0)])
    fake.library_missing = nvml_state == "library missing"
    monkeypatch.setattr(gpu, "build_source", lambda args, real=gpu.build_source: real(args, nvml=fake))
    port = free_port()
    args = build_parser().parse_args(["--broker-url", redis_url, "--gpu=on", "--gpu-sample-interval", "0.2"])
    exporter = Exporter(build_sources(args))
    gpu_line = "gpu_info{" if nvml_state == "present" else "nvml_up"
    text = asyncio.run(serve_and_scrape(exporter, port, 'celery_queue_length{queue="analyses"} 1.0', gpu_line))
    if nvml_state == "present":
        assert "nvml_up 1.0" in text
        assert f'gpu_power_limit_watts{{gpu="0",model="Tesla T4",uuid="{tesla_t4(0).uuid}"}} 70.0' in text
        assert "gpu_busy_seconds_total{" in text
    else:  # no NVML: the rest of the exporter works, nvml_up says why there are no GPU series
        assert "nvml_up 0.0" in text
        assert 'nvml_errors_total{reason="library_not_found"}' in text
        assert "gpu_info{" not in text and "gpu_utilization_ratio{" not in text
    assert fake.initialised == 0  # shut down when the exporter stopped
