"""Bad start-up input (issue 15, finding 6): exit 2 and one line naming the flag, field or file and what is
accepted; never a traceback, never a misleading "cannot listen"."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lensing_metrics.cli import main

ROOT = Path(__file__).resolve().parents[2]


def kubeconfig(cluster: str) -> str:
    return (
        "apiVersion: v1\nclusters:\n- name: c\n  cluster: " + cluster + "\ncontexts:\n- name: x\n"
        "  context: {cluster: c}\ncurrent-context: x\n"
    )


FILES = {
    "notutf8.yaml": b"\xff\xfe brokers: []",
    "broker.yaml": b'brokers:\n  - name: a\n    url: "redis://h/0?socket_timeout=abc"\n    namespaces: ["*"]\n',
    "notpem.crt": b"not a certificate\n",
    "kc-notb64.yaml": kubeconfig('{server: "https://127.0.0.1:1", certificate-authority-data: "!!!"}').encode(),
    "kc-string.yaml": kubeconfig('"https://127.0.0.1:1"').encode(),
    "kc-notcert.yaml": kubeconfig(
        '{server: "https://127.0.0.1:1", certificate-authority-data: "' + base64.b64encode(b"hello").decode() + '"}'
    ).encode(),
}

CASES = [
    (["exporter", "--broker-url", "redis://[::1"], "broker URL 'redis://[::1': Invalid IPv6 URL"),
    (["exporter", "--broker-url", "redis://h/0?socket_timeout=abc"], "Invalid value for 'socket_timeout'"),
    (
        ["exporter", "--broker-url", "sentinel://h:26379/abc", "--broker-transport-option", "master_name=m"],
        "the path must be a database number",
    ),
    (
        ["exporter", "--broker-url", "redis://h/0", "--broker-transport-option", "priority_steps=[null]"],
        "priority_steps='[null]': expected a list of integers",
    ),
    (
        ["exporter", "--broker-url", "redis://h/0", "--broker-transport-option", "socket_timeout=-5"],
        "socket_timeout='-5': expected seconds above 0",
    ),
    (["exporter", "--broker-url", "redis://h/0", "--poll-interval", "inf"], "--poll-interval: expected a finite"),
    (["adapter", "--broker-url", "redis://h/0", "--poll-interval", "inf"], "--poll-interval: expected a finite"),
    (
        ["adapter", "--broker-url", "redis://h/0", "--authentication-token-webhook-cache-ttl", "nan"],
        "--authentication-token-webhook-cache-ttl: expected a duration",
    ),
    (["adapter", "--config", "notutf8.yaml"], "--config notutf8.yaml: not UTF-8"),
    (["adapter", "--config", "broker.yaml"], "broker 'a' (url, transportOptions): broker URL"),
    (
        ["adapter", "--broker-url", "redis://h/0", "--client-ca-file", "missing.crt"],
        "--client-ca-file missing.crt: cannot be read",
    ),
    (
        ["adapter", "--broker-url", "redis://h/0", "--client-ca-file", "notpem.crt"],
        "--client-ca-file notpem.crt: not PEM",
    ),
    (
        ["adapter", "--broker-url", "redis://h/0", "--authentication-kubeconfig", "kc-notb64.yaml"],
        "certificate-authority-data: expected base64",
    ),
    (
        ["adapter", "--broker-url", "redis://h/0", "--authentication-kubeconfig", "kc-string.yaml"],
        "cluster 'c': expected a mapping",
    ),
    (
        ["adapter", "--broker-url", "redis://h/0", "--authentication-kubeconfig", "kc-notcert.yaml"],
        "certificate-authority-data: expected base64 of PEM certificates",
    ),
    (["exporter", "--bogus"], "unrecognized arguments: --bogus (see lensing-metrics --help)"),
    (["adapter", "--secure-port", "x"], "--secure-port: expected a port number 0..65535, got 'x' (see"),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("LENSING_", "CELERY_", "KUBERNETES_")):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_input_exits_2_with_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err and "usage:" not in err and "cannot listen" not in err, err


@pytest.mark.parametrize("module", ["exporter", "adapter"])
def test_python_m_argparse_errors_are_one_line(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--no-such-flag"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"lensing-metrics {module}: error: unrecognized arguments: --no-such-flag (see lensing-metrics {module} --help)"
    ]
