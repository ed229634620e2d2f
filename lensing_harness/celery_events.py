"""The fields a Celery worker puts in its task events, for the benchmarks that publish events of pretend workers."""

from __future__ import annotations

from typing import Any


def task_received_fields(task_id: str, name: str, args: str) -> dict[str, Any]:
    """A ``task-received`` event's fields as ``celery.worker.strategy`` sends them (without type, hostname, time)."""
    return {
        "uuid": task_id,
        "name": name,
        "args": args,
        "kwargs": "{}",
        "root_id": task_id,
        "parent_id": None,
        "retries": 0,
        "eta": None,
        "expires": None,
    }
