"""A real Prometheus, Alertmanager and webhook receiver on loopback, around a running exporter.

Used by the end-to-end test of dashboards and alerts and by scripts/render-dashboards.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from lensing_harness.processes import stop_process
from tests.support.services import REPO, free_port, port_open, wait_for

NAMESPACE = "lensing-e2e"
EXPORTER_JOB = "lensing-metrics-exporter"


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(f"none of {', '.join(names)} is installed (scripts/setup-tools.sh installs them)")


def http_json(url: str, data: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    with urllib.request.urlopen(url, body, timeout=timeout) as response:
        return json.loads(response.read())


class Process:
    """A server process with its own temporary directory and log, ready when ``ready_path`` answers 200."""

    def __init__(self, name: str, args: list[str], port: int, workdir: Path, ready_path: str = "/-/ready") -> None:
        self.name, self.port, self.workdir = name, port, workdir
        self.log_path = workdir / f"{name}.log"
        log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's code, whatever the venv was built from
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env, start_new_session=True
        )
        log.close()
        wait_for(lambda: self._ready(ready_path), 30, interval=0.2, what=f"{name} on port {port}: {self.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self, path: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.log()}")
        if not port_open("127.0.0.1", self.port):
            return False
        with contextlib.suppress(OSError), urllib.request.urlopen(self.url + path, timeout=2) as response:
            return bool(response.status == 200)
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.proc)


class Exporter(Process):
    def __init__(self, workdir: Path, broker_url: str, queues: list[str]) -> None:
        port = free_port()
        args = [sys.executable, "-m", "lensing_metrics.cli", "exporter", "--broker-url", broker_url]
        args += [a for q in queues for a in ("--queue", q)]
        args += ["--listen", f"127.0.0.1:{port}", "--poll-interval", "0.5", "--log-level", "warning"]
        super().__init__("exporter", args, port, workdir, ready_path="/readyz")


class Webhook:
    """An Alertmanager webhook receiver (aiohttp on loopback) that keeps every notification it gets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.notifications: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def _serve(self, started: threading.Event) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.notifications.append(await request.json())
            return web.Response(text="ok")

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/alerts", receive)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            started.set()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for note in list(self.notifications) for alert in note.get("alerts", [])]

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Alertmanager(Process):
    def __init__(self, workdir: Path, webhook_url: str) -> None:
        config = {
            "route": {
                "receiver": "webhook",
                "group_by": ["alertname", "queue"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": False}]}],
        }
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        args = [
            _binary("prometheus-alertmanager", "alertmanager"),
            "--config.file=alertmanager.yml",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: a single instance on loopback
            "--log.level=warn",
        ]
        super().__init__("alertmanager", args, port, workdir)


class Prometheus(Process):
    """Scrapes the exporter every second and evaluates the given rule files every second."""

    def __init__(
        self,
        workdir: Path,
        exporter_port: int,
        rule_files: list[Path],
        alertmanager_port: int,
        extra_scrapes: list[dict[str, Any]] | None = None,
    ) -> None:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
            "scrape_configs": [
                {
                    "job_name": EXPORTER_JOB,
                    "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"], "labels": {"namespace": NAMESPACE}}],
                },
                *(extra_scrapes or []),
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        args = [
            _binary("prometheus"),
            "--config.file=prometheus.yml",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        super().__init__("prometheus", args, port, workdir)

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = http_json(f"{self.url}/api/v1/query", {"query": expr})
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        answer = http_json(
            f"{self.url}/api/v1/query_range", {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
        )
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(http_json(f"{self.url}/api/v1/rules")["data"]["groups"])


def rules_with_short_for(source: Path, target: Path, alerts: dict[str, str]) -> Path:
    """A copy of a rule file in which the named alerts wait only the given `for` (the test cannot wait 5 m)."""
    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in alerts:
                rule["for"] = alerts[rule["alert"]]
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


@contextlib.contextmanager
def monitoring_stack(
    broker_url: str,
    queues: list[str],
    short_for: dict[str, str],
    extra_scrapes: list[dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Exporter, Prometheus (with the project's rules, `for` shortened as asked), Alertmanager and webhook;
    ``extra_scrapes``: more Prometheus scrape configs (the render script's other sources)."""
    workdir = Path(tempfile.mkdtemp(prefix="lm-promstack-"))
    started: list[Process | Webhook] = []
    try:
        rules = [
            rules_with_short_for(path, workdir / path.name, short_for)
            for path in sorted((REPO / "alerts").glob("*.rules.yaml"))
        ]
        webhook = Webhook()
        started.append(webhook)
        alertmanager = Alertmanager(workdir, webhook.url)
        started.append(alertmanager)
        exporter = Exporter(workdir, broker_url, queues)
        started.append(exporter)
        prometheus = Prometheus(workdir, exporter.port, rules, alertmanager.port, extra_scrapes)
        started.append(prometheus)
        yield {
            "webhook": webhook,
            "alertmanager": alertmanager,
            "exporter": exporter,
            "prometheus": prometheus,
            "rule_files": rules,
        }
    finally:
        for item in reversed(started):
            item.stop()
        shutil.rmtree(workdir, ignore_errors=True)
