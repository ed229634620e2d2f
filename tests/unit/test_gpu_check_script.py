"""scripts/gpu-check: fails fast and clearly without a GPU; its comparison with nvidia-smi is right."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import time
from types import ModuleType

import pytest

from lensing_sources.gpu.sampler import GpuSampler
from tests.support.fake_nvml import FakeNvml, tesla_t4
from tests.support.services import REPO

SCRIPT = REPO / "scripts" / "gpu-check"


def load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize("how", ["executable", "venv python"])
def test_without_a_gpu_it_fails_at_once_saying_no_nvidia_driver(how: str) -> None:
    command = [str(SCRIPT)] if how == "executable" else [sys.executable, str(SCRIPT)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "FAIL nvml: no NVIDIA driver" in done.stdout, done.stdout + done.stderr
    assert done.stderr == ""
    assert time.monotonic() - started < 60


def test_comparison_with_nvidia_smi(capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script()
    fake = FakeNvml([tesla_t4(0)])
    card = fake.gpus[0]
    card.util_gpu, card.memory_used, card.power_mw = 40, 1000 * 1024**2, 30_000
    card.unsupported = {"nvmlDeviceGetPowerUsage"}
    sampler = GpuSampler(fake)
    snapshot = sampler.sample_once()
    row = {"index": "0", "uuid": card.uuid, "utilization.gpu": "42", "memory.used": "1000", "memory.total": "15360"}
    script.check_against_smi(snapshot, [{**row, "power.draw": "[N/A]"}])
    script.check_against_smi(snapshot, [{**row, "memory.total": "16384", "power.draw": "31.5"}])
    script.check_against_smi(snapshot, [{**row, "uuid": "GPU-other", "power.draw": "1"}])
    sampler.stop()
    statuses = [(status, check) for status, check, _detail in script.results]
    assert statuses == [
        ("PASS", "gpu0 listed"),
        ("PASS", "gpu0 utilization %"),
        ("PASS", "gpu0 memory.used MiB"),
        ("PASS", "gpu0 memory.total MiB"),
        ("PASS", "gpu0 power.draw W"),  # [N/A] there, absent here
        ("PASS", "gpu0 listed"),
        ("PASS", "gpu0 utilization %"),
        ("PASS", "gpu0 memory.used MiB"),
        ("FAIL", "gpu0 memory.total MiB"),
        ("FAIL", "gpu0 power.draw W"),  # nvidia-smi has a number, the collector none
        ("FAIL", "gpu0 listed"),
    ]
