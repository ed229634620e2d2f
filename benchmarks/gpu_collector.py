"""Cost of the GPU collector against the fake NVML (tests/support/fake_nvml.py), with a baseline.

Measures, with 8 fake T4s, each with two processes (one of them running a Celery task published by
lensing_sources.gpu.celery_hook) and ~12 new utilization samples per cycle:

- one sampling cycle (``GpuSampler.sample_once``), per GPU: median and p99 of wall time;
- the baseline in the same run: the same NVML calls made directly on the fake, with nothing done with
  the answers (the fake's own cost, which a real NVML replaces with its own). The collector's own time
  is the difference;
- one scrape (``generate_latest`` of the GPU collector);
- the exporter's CPU share over ``--duration`` seconds with the sampler thread at its default interval
  (2 s) and a scrape every 15 s: process CPU time / wall time, in % of one core.

    .venv/bin/python benchmarks/gpu_collector.py [--gpus 8] [--cycles 300] [--duration 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import generate_latest  # noqa: E402
from prometheus_client.registry import CollectorRegistry  # noqa: E402

from exporter.collectors.gpu import GpuCollector  # noqa: E402
from lensing_sources.gpu.attribution import TaskAttributor  # noqa: E402
from lensing_sources.gpu.celery_hook import process_key  # noqa: E402
from lensing_sources.gpu.sampler import GpuSampler  # noqa: E402
from tests.support.fake_nvml import FakeNvml, tesla_t4  # noqa: E402

PERIOD_US = 166_667  # a T4 samples utilization every 1/6 s


def setup(gpus: int, task_dir: str) -> tuple[FakeNvml, GpuSampler]:
    fake = FakeNvml([tesla_t4(i) for i in range(gpus)])
    fake.count_calls = False
    Path(task_dir, f"{process_key()}.json").write_text('{"queue": "analyses", "task": "lensing.analyse_lens"}')
    for card in fake.gpus:
        card.processes = [(os.getpid(), 2 * 1024**3), (999_999_999, 1024**3)]  # a Celery process and another
        card.util_gpu, card.memory_used = 60, 3 * 1024**3
    sampler = GpuSampler(fake, interval=2.0, attributor=TaskAttributor(task_dir, 200))
    return fake, sampler


def feed(fake: FakeNvml, now_us: int, seconds: float = 2.0) -> int:
    end = now_us
    for card in fake.gpus:
        end = card.run(now_us, seconds, 60, period_us=PERIOD_US)
    return end


def raw_calls(fake: FakeNvml, last_us: int) -> None:
    """The NVML calls of one cycle, straight to the fake: the baseline."""
    n = fake
    for index in range(n.nvmlDeviceGetCount()):
        h = n.nvmlDeviceGetHandleByIndex(index)
        n.nvmlDeviceGetUtilizationRates(h)
        n.nvmlDeviceGetMemoryInfo(h)
        n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)
        n.nvmlDeviceGetPowerUsage(h)
        n.nvmlDeviceGetEnforcedPowerLimit(h)
        n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)
        n.nvmlDeviceGetTotalEccErrors(h, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_VOLATILE_ECC)
        n.nvmlDeviceGetCurrentClocksEventReasons(h)
        n.nvmlDeviceGetSamples(h, n.NVML_GPU_UTILIZATION_SAMPLES, last_us)
        n.nvmlDeviceGetComputeRunningProcesses(h)


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the CPU-share run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as task_dir:
        fake, sampler = setup(args.gpus, task_dir)
        now = feed(fake, 1_700_000_000_000_000)
        sampler.sample_once()  # first cycle: opens nothing new, sets the sample starting points
        cycle, raw, scrape = [], [], []
        registry = CollectorRegistry()
        registry.register(GpuCollector(sampler))
        for _ in range(args.cycles):
            last = now
            now = feed(fake, now)
            started = time.perf_counter()
            sampler.sample_once()
            cycle.append(time.perf_counter() - started)
            started = time.perf_counter()
            raw_calls(fake, last)
            raw.append(time.perf_counter() - started)
            started = time.perf_counter()
            generate_latest(registry)
            scrape.append(time.perf_counter() - started)
        snapshot = sampler.snapshot
        assert len(snapshot.gpus) == args.gpus and snapshot.task_seconds, "the benchmark did not exercise attribution"
        sampler.stop()

        per_gpu = statistics.median(cycle) / args.gpus * 1e3
        raw_per_gpu = statistics.median(raw) / args.gpus * 1e3
        own = per_gpu - raw_per_gpu
        print(
            f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
            f"{args.gpus} fake T4s, {args.cycles} cycles"
        )
        print(
            f"sampling cycle per GPU: median {per_gpu:.3f} ms, p99 {p99(cycle) / args.gpus * 1e3:.3f} ms "
            f"(whole cycle median {statistics.median(cycle) * 1e3:.2f} ms)"
        )
        print(f"baseline, the same NVML calls straight to the fake: {raw_per_gpu:.3f} ms per GPU")
        print(
            f"collector's own time per GPU per cycle: {own:.3f} ms (target <= 1 ms); "
            f"cycle / baseline = {per_gpu / raw_per_gpu:.2f}x"
        )
        print(f"scrape (generate_latest, {args.gpus} GPUs): median {statistics.median(scrape) * 1e3:.2f} ms")

        # CPU share: the sampler thread at its default interval, a scrape every 15 s
        fake, sampler = setup(args.gpus, task_dir)
        registry = CollectorRegistry()
        registry.register(GpuCollector(sampler))
        now = feed(fake, 1_700_000_000_000_000)
        sampler.start()
        cpu0, wall0 = time.process_time(), time.monotonic()
        next_scrape = wall0
        while time.monotonic() - wall0 < args.duration:
            now = feed(fake, now, 1.0)  # the "driver" adds samples; its cost is the fake's, counted below
            if time.monotonic() >= next_scrape:
                generate_latest(registry)
                next_scrape += 15.0
            time.sleep(1.0)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        sampler.stop()
        print(
            f"CPU share, sampler every 2 s + scrape every 15 s, {args.gpus} GPUs, {wall:.0f} s: "
            f"{cpu / wall * 100:.3f} % of one core (target <= 1 %), including the fake NVML and its sample feed"
        )


if __name__ == "__main__":
    main()
