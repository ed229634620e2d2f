"""Attribution with real Celery workers: the fake NVML reports their pool processes as GPU processes."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from celery import Celery

from lensing_sources.gpu.attribution import TaskAttributor
from lensing_sources.gpu.sampler import GpuSampler
from tests.support.fake_nvml import FakeNvml, tesla_t4
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

GiB = 1024**3
TASK = ("analyses", "lensing.analyse_lens")


def start_worker(celery_worker, redis_url: str, task_dir: Path):  # type: ignore[no-untyped-def]
    worker = celery_worker(
        redis_url,
        queues=["analyses"],
        concurrency=2,
        prefetch=1,
        extra_env={"LENSING_GPU_TASK_DIR": str(task_dir)},
        extra_args=["--include", "exporter.gpu.celery_hook"],
    )
    children = wait_for(
        lambda: len(kids := psutil.Process(worker.pid).children()) == 2 and kids, 60, what="2 pool processes"
    )
    return worker, sorted(child.pid for child in children)


def running_pid(task_dir: Path) -> int | None:
    files = list(task_dir.glob("*.json")) if task_dir.exists() else []
    return int(files[0].name.split("-")[0]) if len(files) == 1 else None


def test_gpu_seconds_and_memory_follow_the_task_across_worker_restarts(
    redis_url: str,
    celery_worker,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    task_dir = tmp_path / "gpu-tasks"
    fake = FakeNvml([tesla_t4(0)])
    card = fake.gpus[0]
    sampler = GpuSampler(fake, attributor=TaskAttributor(str(task_dir), max_task_names=200))
    producer = Celery("producer", broker=redis_url)
    now = card.run(1_700_000_000_000_000, 1.0, 0)
    sampler.sample_once()

    worker, pool = start_worker(celery_worker, redis_url, task_dir)
    card.processes = [(pid, GiB * (i + 1)) for i, pid in enumerate(pool)]  # both hold a CUDA context
    producer.send_task("lensing.analyse_lens", args=[1, 60], queue="analyses")
    busy_pid = wait_for(lambda: running_pid(task_dir), 60, what="the task's pool process to publish itself")
    assert busy_pid in pool

    now = card.run(now, 2.0, 100, period_us=500_000)
    snapshot = sampler.sample_once()
    # 2 busy seconds shared by the card's two processes: the one running the task gets 1.0
    assert snapshot.task_seconds == {TASK: pytest.approx(1.0)}
    assert snapshot.task_memory == {TASK: dict(card.processes)[busy_pid]}

    # the worker is SIGKILLed mid-task (spot reclaim, OOM): its file stays behind but matches no process
    worker.kill()
    worker, pool = start_worker(celery_worker, redis_url, task_dir)
    card.processes = [(pid, GiB) for pid in pool]
    now = card.run(now, 1.0, 100, period_us=500_000)
    snapshot = sampler.sample_once()
    assert snapshot.task_memory == {}
    assert snapshot.task_seconds == {TASK: pytest.approx(1.0)}

    producer.send_task("lensing.analyse_lens", args=[2, 3], queue="analyses")
    wait_for(lambda: any(f"{pid}-" in f.name for f in task_dir.glob("*.json") for pid in pool), 60, what="new task")
    now = card.run(now, 1.0, 100, period_us=500_000)
    snapshot = sampler.sample_once()
    assert snapshot.task_seconds == {TASK: pytest.approx(1.5)}
    assert snapshot.task_memory == {TASK: GiB}
    # task_postrun removes the file: the process still holds the GPU but runs no task
    wait_for(lambda: not any(f"{pid}-" in f.name for f in task_dir.glob("*.json") for pid in pool), 60)
    card.run(now, 1.0, 100, period_us=500_000)
    snapshot = sampler.sample_once()
    assert snapshot.task_seconds == {TASK: pytest.approx(1.5)}
    assert snapshot.task_memory == {}
    sampler.stop()
