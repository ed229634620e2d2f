"""The fake NVML keeps to pynvml's contract: names, signatures, error classes and codes, struct fields."""

from __future__ import annotations

import inspect

import pynvml
import pytest

from tests.support import fake_nvml
from tests.support.fake_nvml import FakeNvml, h100, tesla_t4


def test_every_fake_function_exists_in_pynvml_with_the_same_parameters() -> None:
    fake = FakeNvml()
    names = [n for n in dir(fake) if n.startswith("nvml") and callable(getattr(fake, n))]
    assert len(names) > 20
    for name in names:
        real = getattr(pynvml, name)
        assert list(inspect.signature(getattr(fake, name)).parameters) == list(inspect.signature(real).parameters), name


def test_error_classes_and_codes_match_pynvml() -> None:
    fake = FakeNvml()
    real = {n: getattr(pynvml, n) for n in dir(pynvml) if n.startswith("NVMLError_")}
    for name, cls in real.items():
        code = cls().value
        fake_cls = getattr(fake, name)
        assert issubclass(fake_cls, fake.NVMLError)
        assert fake.NVMLError(code).__class__ is fake_cls and fake_cls().value == code, name
    for name in dir(pynvml):
        if name.startswith("NVML_ERROR_"):
            assert getattr(fake_nvml, name) == getattr(pynvml, name), name


def test_constants_and_struct_fields_match_pynvml() -> None:
    for name in dir(fake_nvml):
        if name.startswith(("NVML_", "nvmlEventType", "nvmlClocks")) and hasattr(pynvml, name):
            assert getattr(fake_nvml, name) == getattr(pynvml, name), name
    for struct in ("c_nvmlMemory_t", "c_nvmlUtilization_t", "c_nvmlValue_t", "c_nvmlSample_t"):
        fake_fields = [f[0] for f in getattr(fake_nvml, struct)._fields_]
        assert fake_fields == [f[0] for f in getattr(pynvml, struct)._fields_], struct
    assert [f[0] for f in pynvml.c_nvmlEventData_t._fields_] == list(fake_nvml.FakeEventData.__dataclass_fields__)
    assert {"pid", "usedGpuMemory", "gpuInstanceId", "computeInstanceId"} == {
        f[0] for f in pynvml.c_nvmlProcessInfo_t._fields_
    }


def test_profiles_and_injected_faults() -> None:
    fake = FakeNvml([tesla_t4(), h100()])
    with pytest.raises(fake.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    t4, big = (fake.nvmlDeviceGetHandleByIndex(i) for i in range(2))
    with pytest.raises(fake.NVMLError_NotSupported):
        fake.nvmlDeviceGetFanSpeed(t4)  # passively cooled
    assert fake.nvmlDeviceGetEnforcedPowerLimit(t4) == 70_000  # milliwatts, as NVML
    assert fake.nvmlDeviceGetEccMode(t4) == [1, 1]
    assert fake.nvmlDeviceGetName(big) == "NVIDIA H100 80GB HBM3"
    with pytest.raises(fake.NVMLError_NotFound):
        fake.nvmlDeviceGetSamples(t4, fake.NVML_GPU_UTILIZATION_SAMPLES, 0)  # nothing sampled yet
    fake.gpus[0].run(0, 1.0, 40)
    value_type, samples = fake.nvmlDeviceGetSamples(t4, fake.NVML_GPU_UTILIZATION_SAMPLES, 0)
    assert value_type == fake.NVML_VALUE_TYPE_UNSIGNED_INT and samples[0].sampleValue.uiVal == 40
    fake.gpus[1].lost = True
    with pytest.raises(fake.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetMemoryInfo(big)
    event_set = fake.nvmlEventSetCreate()
    fake.nvmlDeviceRegisterEvents(t4, fake.nvmlEventTypeXidCriticalError, event_set)
    with pytest.raises(fake.NVMLError_Timeout):
        fake.nvmlEventSetWait(event_set, 10)
    fake.inject_xid(0, 79)
    assert fake.nvmlEventSetWait(event_set, 1000).eventData == 79
    fake.nvmlShutdown()
    fake.library_missing = True
    with pytest.raises(fake.NVMLError_LibraryNotFound):
        fake.nvmlInit()
