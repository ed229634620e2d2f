"""Imported by a Celery worker: publishes which task each pool process is running, for GPU attribution.

Load it in the worker with ``celery -A app worker --include lensing_sources.gpu.celery_hook`` (or import it
from the app module). On ``task_prerun`` the pool process writes one small file,
``$LENSING_GPU_TASK_DIR/<pid>-<starttime>.json`` = ``{"queue": ..., "task": ...}``; on ``task_postrun``
it removes it. The exporter opens only the files of the PIDs NVML reports on a GPU.

Why files keyed by ``<pid in the worker's namespace>-<process start time>``: no broker round trip per
task (a local write of ~80 bytes), nothing to configure but a directory shared on the node (a hostPath
or emptyDir), no stale state after a restart (a new process has a new start time, so a file left by a
SIGKILLed process matches nothing), and it works across PID namespaces: the exporter turns NVML's host
PID into the same key from ``/proc/<pid>/status`` (``NSpid``, innermost) and ``/proc/<pid>/stat``
(start time in clock ticks since boot, the same inside and outside a container).

This module imports nothing of the exporter; a failure to write never disturbs the task.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_process_shutdown

DEFAULT_TASK_DIR = "/run/lensing-metrics/gpu-tasks"
#: files older than this (left by SIGKILLed processes) are removed by the next worker process that starts a task
STALE_AFTER_SECONDS = 7 * 24 * 3600

log = logging.getLogger(__name__)
_state: dict[str, Any] = {"key": None, "warned": False, "pruned": False}


def process_key(pid: int | str = "self", proc: str = "/proc") -> str | None:
    """``<innermost namespace pid>-<start time>`` of a process, or None when it is gone or unreadable."""
    try:
        with open(f"{proc}/{pid}/status", encoding="ascii", errors="replace") as status:
            nspid = next((line.split()[-1] for line in status if line.startswith("NSpid:")), None)
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    if nspid is None:  # kernels before 4.1 have no NSpid: no PID namespaces to see through
        nspid = str(pid) if pid != "self" else str(os.getpid())
    # fields after "(comm)": state is field 3 of stat(5), starttime field 22 -> index 19 here
    return f"{nspid}-{fields[19]}" if len(fields) > 19 else None


def task_dir() -> str:
    return os.environ.get("LENSING_GPU_TASK_DIR", DEFAULT_TASK_DIR)


def _own_path() -> str | None:
    key = _state["key"]
    if key is None or not key.startswith(f"{os.getpid()}-"):  # forked since: a new process, a new key
        key = _state["key"] = process_key()
    return None if key is None else os.path.join(task_dir(), f"{key}.json")


@task_prerun.connect
def _task_started(task: Any = None, **_kwargs: Any) -> None:
    try:
        path = _own_path()
        if path is None or task is None:
            return
        delivery = getattr(task.request, "delivery_info", None) or {}
        queue = delivery.get("routing_key") or delivery.get("queue") or ""
        body = json.dumps({"queue": str(queue), "task": str(task.name)})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(body)
        os.replace(tmp, path)
        if not _state["pruned"]:
            _state["pruned"] = True
            _prune(os.path.dirname(path))
    except Exception as exc:  # attribution is best effort; the task runs regardless
        if not _state["warned"]:
            _state["warned"] = True
            log.warning("GPU task attribution: cannot write to %s: %s", task_dir(), exc)


@task_postrun.connect
@worker_process_shutdown.connect
def _task_finished(**_kwargs: Any) -> None:
    path = _own_path()
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _prune(directory: str) -> None:
    cutoff = time.time() - STALE_AFTER_SECONDS
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.name.endswith(".json") and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
