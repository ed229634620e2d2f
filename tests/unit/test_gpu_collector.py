"""The GPU collector against the fake NVML, through the same code path as the real pynvml."""

from __future__ import annotations

import argparse
import logging
import threading
import time

import pytest
from prometheus_client.registry import CollectorRegistry

from exporter.collectors.gpu import GpuCollector
from exporter.sources import gpu
from lensing_core.catalog import GPU
from lensing_sources.gpu.device import DeviceReader
from lensing_sources.gpu.nvml import NvmlSession
from lensing_sources.gpu.sampler import GpuSampler
from tests.support.fake_nvml import FakeNvml, h100, tesla_t4
from tests.support.services import wait_for

T0 = 1_700_000_000_000_000  # µs


def registry_for(sampler: GpuSampler) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuCollector(sampler))
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [s.labels for family in registry.collect() for s in family.samples if s.name == name]


def t4_labels(index: int = 0) -> dict[str, str]:
    return {"gpu": str(index), "uuid": tesla_t4(index).uuid, "model": "Tesla T4"}


@pytest.fixture
def fake() -> FakeNvml:
    return FakeNvml([tesla_t4(0), tesla_t4(1)])


@pytest.fixture
def sampler(fake: FakeNvml) -> GpuSampler:
    sampler = GpuSampler(fake, interval=0.05)
    yield sampler
    sampler.stop()


def test_t4_fields_in_base_units(fake: FakeNvml, sampler: GpuSampler) -> None:
    card = fake.gpus[0]
    card.util_gpu, card.util_memory, card.memory_used = 37, 12, 2 * 1024**3
    card.power_mw, card.temperature, card.sm_clock_mhz, card.throttle_reasons = 41_250, 52, 1590, 0x4
    sampler.sample_once()
    registry = registry_for(sampler)
    labels = t4_labels(0)
    assert value(registry, "nvml_up") == 1
    assert value(registry, "gpu_utilization_ratio", **labels) == pytest.approx(0.37)
    assert value(registry, "gpu_memory_utilization_ratio", **labels) == pytest.approx(0.12)
    assert value(registry, "gpu_memory_used_bytes", **labels) == 2 * 1024**3
    assert value(registry, "gpu_memory_total_bytes", **labels) == 15_360 * 1024**2
    assert value(registry, "gpu_power_watts", **labels) == pytest.approx(41.25)
    assert value(registry, "gpu_power_limit_watts", **labels) == 70
    assert value(registry, "gpu_temperature_celsius", **labels) == 52
    assert value(registry, "gpu_sm_clock_hertz", **labels) == 1590e6
    assert value(registry, "gpu_throttled", **labels, reason="sw_power_cap") == 1
    assert value(registry, "gpu_throttled", **labels, reason="hw_thermal_slowdown") == 0
    assert value(registry, "gpu_ecc_uncorrected_errors_total", **labels) == 0
    assert value(registry, "gpu_info", **labels, driver_version="550.54.15") == 1
    assert value(registry, "gpu_busy_seconds_total", **labels) == 0


def test_h100_profile(sampler: GpuSampler) -> None:
    fake = FakeNvml([h100(0)])
    sampler = GpuSampler(fake)
    sampler.sample_once()
    registry = registry_for(sampler)
    labels = {"gpu": "0", "uuid": h100(0).uuid, "model": "NVIDIA H100 80GB HBM3"}
    assert value(registry, "gpu_power_limit_watts", **labels) == 700
    assert value(registry, "gpu_sm_clock_hertz", **labels) == 1980e6
    sampler.stop()


def test_every_family_is_in_the_catalog_with_its_labels(fake: FakeNvml, sampler: GpuSampler, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake.gpus[0].processes = [(999_999, 1)]
    sampler.sample_once()
    fake.inject_xid(0, 79)
    registry = registry_for(sampler)
    sampler.task_seconds[("analyses", "lensing.analyse_lens")] = 1.0
    for family in registry.collect():
        spec = GPU[family.name + ("_total" if family.type == "counter" else "")]
        assert spec.kind == family.type
        for sample in family.samples:
            assert set(sample.labels) - set(spec.optional_labels) == set(spec.labels), sample


def test_busy_seconds_integrate_bursts_between_scrapes(fake: FakeNvml, sampler: GpuSampler) -> None:
    card = fake.gpus[0]
    end = card.run(T0, 1.0, 0)
    sampler.sample_once()  # first read: sets the starting point only
    registry = registry_for(sampler)
    assert value(registry, "gpu_busy_seconds_total", **t4_labels(0)) == 0
    # a 0.5 s burst at 100 % and idle again, all between two reads: the point reading sees 0
    end = card.run(end, 0.5, 100, period_us=100_000)
    end = card.run(end, 2.0, 0)
    card.util_gpu = 0
    sampler.sample_once()
    assert value(registry, "gpu_busy_seconds_total", **t4_labels(0)) == pytest.approx(0.5)
    assert value(registry, "gpu_utilization_ratio", **t4_labels(0)) == 0
    card.run(end, 3.0, 50, period_us=500_000)
    sampler.sample_once()
    assert value(registry, "gpu_busy_seconds_total", **t4_labels(0)) == pytest.approx(2.0)
    # the other card saw nothing and says 0, not absent: it does report samples
    assert value(registry, "gpu_busy_seconds_total", **t4_labels(1)) == 0


def test_a_gap_longer_than_a_sample_period_is_not_made_up(fake: FakeNvml, sampler: GpuSampler) -> None:
    card = fake.gpus[0]
    card.samples = [(T0, 100)]
    sampler.sample_once()
    card.samples.append((T0 + 30_000_000, 100))  # 30 s later: the samples between were lost
    sampler.sample_once()
    assert value(registry_for(sampler), "gpu_busy_seconds_total", **t4_labels(0)) == pytest.approx(1.0)


def test_idle_allocated_seconds_count_only_while_a_process_holds_the_gpu(fake: FakeNvml, sampler: GpuSampler) -> None:
    held, free = fake.gpus
    for card in fake.gpus:
        card.run(T0, 1.0, 0)
    sampler.sample_once()
    held.processes = [(4242, 300 * 1024**2)]
    held.run(T0 + 1_000_000, 4.0, 2, period_us=1_000_000)  # 2 % <= the 5 % threshold
    free.run(T0 + 1_000_000, 4.0, 0, period_us=1_000_000)
    sampler.sample_once()
    registry = registry_for(sampler)
    assert value(registry, "gpu_idle_allocated_seconds_total", **t4_labels(0)) == pytest.approx(4.0)
    assert value(registry, "gpu_idle_allocated_seconds_total", **t4_labels(1)) == 0
    held.run(T0 + 5_000_000, 2.0, 80, period_us=1_000_000)  # busy: not idle
    sampler.sample_once()
    assert value(registry, "gpu_idle_allocated_seconds_total", **t4_labels(0)) == pytest.approx(4.0)


def test_unsupported_field_is_absent_logged_once_and_not_asked_again(
    fake: FakeNvml, sampler: GpuSampler, caplog: pytest.LogCaptureFixture
) -> None:
    fake.gpus[1].unsupported = {"nvmlDeviceGetPowerUsage"}
    fake.gpus[1].no_permission = {"nvmlDeviceGetTemperature"}
    with caplog.at_level(logging.INFO, logger="lensing_sources.gpu"):
        for _ in range(3):
            sampler.sample_once()
    registry = registry_for(sampler)
    assert value(registry, "gpu_power_watts", **t4_labels(0)) is not None
    assert value(registry, "gpu_power_watts", **t4_labels(1)) is None
    assert value(registry, "gpu_temperature_celsius", **t4_labels(1)) is None
    assert value(registry, "gpu_memory_used_bytes", **t4_labels(1)) is not None
    lines = [r.getMessage() for r in caplog.records if "does not report" in r.getMessage()]
    assert len(lines) == 1 and "power (not_supported)" in lines[0] and "temperature (no_permission)" in lines[0]
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 3 + 1  # card 0 three times, card 1 once
    assert value(registry, "nvml_up") == 1


def test_a_function_the_driver_lacks_drops_its_field_for_that_card_only(
    fake: FakeNvml, sampler: GpuSampler, caplog: pytest.LogCaptureFixture
) -> None:
    fake.gpus[1].function_not_found = {"nvmlDeviceGetPowerUsage"}
    with caplog.at_level(logging.INFO, logger="lensing_sources.gpu"):
        for _ in range(3):
            sampler.sample_once()
    registry = registry_for(sampler)
    assert value(registry, "gpu_power_watts", **t4_labels(0)) is not None
    assert value(registry, "gpu_power_watts", **t4_labels(1)) is None
    for name in ("gpu_power_limit_watts", "gpu_temperature_celsius", "gpu_memory_used_bytes", "gpu_sm_clock_hertz"):
        assert value(registry, name, **t4_labels(1)) is not None, name
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 3 + 1  # card 0 three times, card 1 once
    lines = [r.getMessage() for r in caplog.records if "does not report" in r.getMessage()]
    assert len(lines) == 1 and "power (function_not_found)" in lines[0]
    assert value(registry, "nvml_up") == 1 and fake.init_calls == 1  # a missing function is no reason to reopen


def test_throttle_reasons_fall_back_to_the_older_function_on_a_driver_without_the_newer(
    fake: FakeNvml, sampler: GpuSampler
) -> None:
    fake.gpus[1].function_not_found = {"nvmlDeviceGetCurrentClocksEventReasons"}
    fake.gpus[1].throttle_reasons = 0x40
    sampler.sample_once()
    registry = registry_for(sampler)
    assert value(registry, "gpu_throttled", **t4_labels(1), reason="hw_thermal_slowdown") == 1
    assert value(registry, "gpu_throttled", **t4_labels(1), reason="gpu_idle") == 0
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 1  # card 1 only


def test_processes_are_listed_by_the_v2_call_when_the_unversioned_one_is_a_library_mismatch(fake: FakeNvml) -> None:
    fake.gpus[0].processes = [(4242, 300 * 1024**2), (4343, None)]
    fake.gpus[0].library_mismatch = {"nvmlDeviceGetComputeRunningProcesses"}
    session = NvmlSession(fake)
    assert session.open() is None
    reader = DeviceReader(fake)
    mismatched, other = (reader.read(device, 0) for device in session.devices)
    assert mismatched.processes == [(4242, 300 * 1024**2), (4343, None)]
    assert other.processes == []
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 1  # card 0 only
    assert reader.missing[session.devices[0].uuid] == {}
    session.close()


def test_card_without_ecc_has_no_ecc_series(fake: FakeNvml, sampler: GpuSampler) -> None:
    fake.gpus[1].ecc_enabled = False
    sampler.sample_once()
    registry = registry_for(sampler)
    assert value(registry, "gpu_ecc_uncorrected_errors_total", **t4_labels(0)) == 0
    assert value(registry, "gpu_ecc_uncorrected_errors_total", **t4_labels(1)) is None


def test_gpu_lost_mid_run_drops_its_series_counts_and_reinitialises(fake: FakeNvml, sampler: GpuSampler) -> None:
    for card in fake.gpus:
        card.samples = [(T0, 100)]
    sampler.sample_once()
    fake.gpus[0].samples.append((T0 + 1_000_000, 100))
    sampler.sample_once()
    assert fake.init_calls == 1
    fake.gpus[1].lost = True
    sampler.sample_once()
    registry = registry_for(sampler)
    assert value(registry, "gpu_memory_used_bytes", **t4_labels(1)) is None
    assert value(registry, "gpu_info", **t4_labels(1), driver_version="550.54.15") is None
    assert value(registry, "gpu_memory_used_bytes", **t4_labels(0)) is not None
    assert value(registry, "nvml_errors_total", reason="gpu_is_lost") == 1
    assert fake.shutdown_calls == 1  # shut down after the cycle; opened again on the next one
    fake.gpus[1].lost = False
    time.sleep(sampler.interval)  # the next cycle
    sampler.sample_once()
    assert fake.init_calls == 2
    assert value(registry, "gpu_memory_used_bytes", **t4_labels(1)) is not None
    assert value(registry, "gpu_busy_seconds_total", **t4_labels(0)) == pytest.approx(1.0)  # kept across re-init


def test_driver_library_mismatch_reinitialises(fake: FakeNvml, sampler: GpuSampler) -> None:
    sampler.sample_once()
    fake.version_mismatch = True
    sampler.sample_once()
    registry = registry_for(sampler)
    assert series(registry, "gpu_memory_used_bytes") == []
    assert value(registry, "nvml_errors_total", reason="lib_rm_version_mismatch") == 2  # both cards
    time.sleep(sampler.interval)
    sampler.sample_once()  # the next cycle: nvmlInit again (the fake clears the mismatch, as a restart would)
    assert fake.init_calls == 2
    assert len(series(registry, "gpu_memory_used_bytes")) == 2


def test_library_not_found_auto_is_off_and_on_is_nvml_up_0(fake: FakeNvml) -> None:
    fake.library_missing = True
    assert gpu.build_source(argparse.Namespace(gpu="auto"), nvml=fake) is None
    assert gpu.build_source(argparse.Namespace(gpu="off"), nvml=fake) is None
    source = gpu.build_source(argparse.Namespace(gpu="on", gpu_sample_interval=0.05), nvml=fake)
    assert source is not None
    sampler = source.sampler  # type: ignore[attr-defined]
    sampler.sample_once()
    registry = registry_for(sampler)
    assert value(registry, "nvml_up") == 0
    assert value(registry, "nvml_errors_total", reason="library_not_found") >= 1  # type: ignore[operator]
    assert series(registry, "gpu_info") == [] and series(registry, "gpu_busy_seconds_total") == []
    # the driver arrives (installed late on the node): picked up after the backoff, no restart needed
    fake.library_missing = False
    source.start()
    wait_for(lambda: sampler.snapshot.up, 30, what="nvml_up 1 after the library appeared")
    assert value(registry, "gpu_memory_total_bytes", **t4_labels(0)) is not None
    source.stop()
    assert fake.initialised == 0


def test_no_driver_is_off_in_auto_and_no_module_is_nvml_up_0_when_on() -> None:
    from lensing_sources.gpu.nvml import NvmlSession

    assert NvmlSession(None).open() == "module_missing"
    fake = FakeNvml()
    fake.driver_missing = True
    assert gpu.build_source(argparse.Namespace(gpu="auto"), nvml=fake) is None


def test_initialised_once_sampled_in_background_and_shut_down_at_stop(fake: FakeNvml) -> None:
    source = gpu.build_source(argparse.Namespace(gpu="auto", gpu_sample_interval=0.02), nvml=fake)
    assert source is not None
    registry = CollectorRegistry(auto_describe=False)
    for collector in source.collectors():
        registry.register(collector)
    source.start()
    wait_for(lambda: fake.calls["nvmlDeviceGetUtilizationRates"] >= 10, 30, what="10 background reads")
    # the sampler and XID threads keep calling NVML meanwhile: count only the calls made by the scraping thread
    scraper = threading.current_thread().name
    calls_before = fake.callers[scraper]
    for _ in range(5):
        assert len(series(registry, "gpu_memory_used_bytes")) == 2
    assert fake.callers[scraper] == calls_before  # /metrics answers from the last read, never from NVML
    assert fake.init_calls == 1 and fake.initialised == 1
    source.stop()
    assert fake.initialised == 0 and fake.shutdown_calls == 1


def test_xid_events_are_counted_per_gpu_and_xid(fake: FakeNvml, sampler: GpuSampler) -> None:
    sampler.sample_once()
    fake.inject_xid(1, 79)
    fake.inject_xid(1, 79)
    fake.inject_xid(0, 48)

    def counted() -> bool:
        sampler.sample_once()
        registry = registry_for(sampler)
        return value(registry, "gpu_xid_errors_total", **t4_labels(1), xid="79") == 2 and (
            value(registry, "gpu_xid_errors_total", **t4_labels(0), xid="48") == 1
        )

    wait_for(counted, 30, what="XID counts")


def test_options_and_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import build_parser

    parser = build_parser()
    args = parser.parse_args([])
    assert (args.gpu, args.gpu_sample_interval, args.gpu_idle_threshold, args.gpu_max_task_names) == (
        "auto",
        2.0,
        0.05,
        200,
    )
    assert parser.parse_args(["--gpu"]).gpu == "on"
    assert parser.parse_args(["--gpu=off"]).gpu == "off"
    for bad in (["--gpu=maybe"], ["--gpu-idle-threshold", "1.5"], ["--gpu-max-task-names", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(bad)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "ratio from 0" in err and "expected one of auto, on, off, got 'maybe'" in err


def test_environment_variables_are_checked_like_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from exporter.cli import build_parser

    monkeypatch.setenv("LENSING_GPU", "OFF")
    monkeypatch.setenv("LENSING_GPU_SAMPLE_INTERVAL", "5")
    args = build_parser().parse_args([])
    assert (args.gpu, args.gpu_sample_interval) == ("off", 5.0)
    monkeypatch.setenv("LENSING_GPU", "sometimes")
    with pytest.raises(SystemExit) as exit_info:
        build_parser()
    assert exit_info.value.code == 2
    assert "LENSING_GPU='sometimes'" in capsys.readouterr().err


def test_a_card_that_keeps_failing_backs_off_and_is_logged_once(
    fake: FakeNvml, sampler: GpuSampler, caplog: pytest.LogCaptureFixture
) -> None:
    sampler.sample_once()
    fake.gpus[0].samples = [(T0, 0)]
    original = fake.nvmlDeviceGetUtilizationRates

    def broken(handle):  # type: ignore[no-untyped-def]
        if handle.gpu is fake.gpus[0]:
            raise fake.NVMLError(fake.NVML_ERROR_UNKNOWN)
        return original(handle)

    fake.nvmlDeviceGetUtilizationRates = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="lensing_sources.gpu"):
        delays = []
        for _ in range(4):
            sampler.sample_once()  # opens NVML, card 0 fails, NVML is closed and a reopen scheduled
            delays.append(sampler._next_open - time.monotonic())
            for _ in range(5):
                sampler.sample_once()  # within the backoff: no nvmlInit per cycle
            sampler._next_open = 0.0  # let the backoff pass
    assert fake.init_calls == 4
    assert delays == sorted(delays) and delays[-1] > 3 * delays[0]  # doubling: 0.05, 0.1, 0.2, 0.4 s (x0.9)
    assert len([r for r in caplog.records if "read failed" in r.getMessage()]) == 1
    assert value(registry_for(sampler), "nvml_errors_total", reason="unknown") == 4
    fake.nvmlDeviceGetUtilizationRates = original  # type: ignore[method-assign]
    sampler.sample_once()
    assert sampler._read_failures == 0 and len(sampler.snapshot.gpus) == 2
