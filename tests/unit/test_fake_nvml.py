"""The fake NVML keeps to pynvml's contract: names, signatures, error classes and codes, struct fields."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynvml
import pytest

import lensing_sources.gpu
from tests.support import fake_nvml
from tests.support.fake_nvml import FakeNvml, h100, tesla_t4

GPU_CODE = Path(lensing_sources.gpu.__file__).parent


class _NvmlUses(ast.NodeVisitor):
    """The names one module takes from the pynvml module: ``<m>.name`` and ``getattr(<m>, "name", ...)``, where
    <m> is what the GPU code calls it: ``nvml`` (a parameter or local), ``self.nvml``, ``pynvml``, or an alias
    assigned from one of those."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names = {"nvml", "pynvml"}
        self.self_attrs = {"nvml"}
        self.used: dict[str, str] = {}  # name -> where, for the failure message

    def is_module(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.names
        return (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and node.attr in self.self_attrs
        )

    def learn_aliases(self, tree: ast.AST) -> None:
        known = -1
        while known != len(self.names) + len(self.self_attrs):
            known = len(self.names) + len(self.self_attrs)
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        self._alias(target, node.value)

    def _alias(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts, strict=True):
                self._alias(t, v)
        elif self.is_module(value):
            if isinstance(target, ast.Name):
                self.names.add(target.id)
            elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                self.self_attrs.add(target.attr)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if self.is_module(node.value):
            self.used.setdefault(node.attr, f"{self.path.name}:{node.lineno}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr"}
            and len(node.args) >= 2
            and self.is_module(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            self.used.setdefault(node.args[1].value, f"{self.path.name}:{node.lineno}")
        self.generic_visit(node)


def nvml_names_used() -> dict[str, str]:
    """Every pynvml name the shipped GPU code uses -> the first place it does."""
    used: dict[str, str] = {}
    for path in sorted(GPU_CODE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        uses = _NvmlUses(path)
        uses.learn_aliases(tree)
        uses.visit(tree)
        for name, where in uses.used.items():
            used.setdefault(name, where)
    return used


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any, bool]]:
    """(name, kind, required) of each parameter. inspect.signature follows pynvml's decorators
    (@convertStrBytes, @throwOnVersionMismatch use functools.wraps) to the function they wrap."""
    return [(p.name, p.kind, p.default is p.empty) for p in inspect.signature(function).parameters.values()]


def test_every_pynvml_name_the_gpu_code_uses_is_in_pynvml_and_in_the_fake_alike() -> None:
    used = nvml_names_used()
    # the scan sees every module that talks to NVML (a scan that finds nothing would pass anything)
    assert {
        "nvmlInit",
        "nvmlShutdown",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlEventSetWait",
        "NVMLError",
        "NVMLLibraryMismatchError",
        "NVML_ERROR_NOT_SUPPORTED",
    } <= set(used)
    fake = FakeNvml()
    for name, where in sorted(used.items()):
        assert hasattr(pynvml, name), f"{where} uses {name}, which pynvml does not have"
        assert hasattr(fake, name), f"{where} uses {name}, which the fake NVML does not have"
        real, stand_in = getattr(pynvml, name), getattr(fake, name)
        if inspect.isclass(real):
            assert inspect.isclass(stand_in) and issubclass(stand_in, BaseException) == issubclass(
                real, BaseException
            ), name
        elif callable(real):
            assert callable(stand_in), name
            assert parameters(stand_in) == parameters(real), f"{name} (used at {where})"
        else:
            assert stand_in == real, name


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
    fake.gpus[0].processes = [(4242, None)]
    fake.gpus[0].library_mismatch = {"nvmlDeviceGetComputeRunningProcesses"}
    with pytest.raises(fake.NVMLLibraryMismatchError):
        fake.nvmlDeviceGetComputeRunningProcesses(t4)
    assert [p.pid for p in fake.nvmlDeviceGetComputeRunningProcesses_v2(t4)] == [4242]
    fake.gpus[0].function_not_found = {"nvmlDeviceGetPowerUsage"}
    with pytest.raises(fake.NVMLError_FunctionNotFound):
        fake.nvmlDeviceGetPowerUsage(t4)
    assert fake.nvmlDeviceGetPowerUsage(big) == 20_000
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
