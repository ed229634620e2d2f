"""The demo's adapter pieces: the printed kubectl command works as pasted, the HPA line follows the values."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from celery import Celery

from lensing_harness.adapter_process import AdapterDemo
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def test_pasted_kubectl_command_and_hpa_line(redis_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    producer = Celery("producer", broker=redis_url)
    for i in range(45):
        producer.send_task("lensing.analyse_lens", args=[i], queue="analyses")
    demo = AdapterDemo(redis_url, tmp_path / "demo")
    try:
        command = demo.header_lines()[1].split("what the HPA sees: ", 1)[1]

        def pasted() -> object:
            done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
            return done.returncode == 0 and json.loads(done.stdout)

        body = wait_for(lambda: (b := pasted()) and b["items"][0]["value"] == "45" and b, 30, what="45 via kubectl")
        assert body["items"][0]["metricName"] == "celery_queue_backlog"
        lines = demo.lines()
        assert "celery_queue_length{queue=analyses} = 45" in lines[1]
        assert "metric total 45 with 2 replicas -> 5 replicas" in lines[2]
    finally:
        demo.stop()
