"""GPU processes (host PIDs from NVML) -> the Celery queue and task each one is running.

Reads what :mod:`lensing_sources.gpu.celery_hook` writes in the workers: one file per pool process that is
running a task, named by the process's ``<namespace pid>-<start time>`` key. Only the files of the PIDs
NVML lists are opened: the cost is two /proc reads and one small file per GPU process per cycle.
"""

from __future__ import annotations

import json
import os

from lensing_core.labels import OTHER, LabelCap
from lensing_sources.gpu.celery_hook import process_key

__all__ = ["OTHER", "TaskAttributor"]


class TaskAttributor:
    def __init__(self, task_dir: str, max_task_names: int, proc: str = "/proc") -> None:
        self.task_dir = task_dir
        self.proc = proc
        self.tasks = LabelCap(max_task_names)
        self.queues = LabelCap(max_task_names)

    def lookup(self, host_pid: int) -> tuple[str, str] | None:
        """(queue, task) the process is running now, or None (not a Celery worker, idle, or not visible)."""
        key = process_key(host_pid, self.proc)
        if key is None:
            return None
        try:
            with open(os.path.join(self.task_dir, f"{key}.json"), encoding="utf-8") as published:
                record = json.load(published)
            queue, task = str(record["queue"]), str(record["task"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return self.queues(queue[:200]), self.tasks(task[:200])
