"""Options of the event consumer, each with its environment variable."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from lensing_core.options import add_option, boolean, non_negative_float, positive_float, positive_int
from lensing_sources.events.state import StateConfig


def buckets(text: str) -> tuple[float, ...]:
    """``0.5,1,5,30``: increasing upper bounds in seconds (+Inf is always added)."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected increasing numbers such as 0.5,1,5,30, got {text!r}") from None
    if not values or any(b <= a for a, b in itertools.pairwise(values)) or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected increasing numbers above 0 such as 0.5,1,5,30, got {text!r}")
    return values


# (flag, env suffix after LENSING_, argparse settings, help); the default of a StateConfig field is filled in
_OPTIONS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    (
        "--events",
        "EVENTS",
        {"action": argparse.BooleanOptionalAction, "type": boolean, "default": True},
        "consume the Celery event stream (default on)",
    ),
    (
        "--analysis-task",
        "ANALYSIS_TASKS",
        {"dest": "analysis_tasks", "action": "append", "metavar": "PATTERN"},
        "task names counted in active_analyses, a shell glob such as 'lensing.analyse_*', repeatable "
        "(default: every task)",
    ),
    (
        "--worker-timeout",
        "WORKER_TIMEOUT",
        {"type": positive_float, "field": "worker_timeout", "metavar": "SECONDS"},
        "a worker silent this long is gone: it leaves celery_workers and its tasks leave active_analyses "
        "(default %(default)s; keep it above the workers' heartbeat interval, 2 s by default)",
    ),
    (
        "--worker-drain-timeout",
        "WORKER_DRAIN_TIMEOUT",
        {"type": positive_float, "field": "drain_timeout", "metavar": "SECONDS"},
        "a worker that went offline (warm shutdown, its pod terminating) with tasks running keeps them counted "
        "until they end, at most this long: set it to the worker pods' terminationGracePeriodSeconds "
        "(default %(default)s)",
    ),
    (
        "--enable-events-interval",
        "ENABLE_EVENTS_INTERVAL",
        {"type": non_negative_float, "default": 60.0, "metavar": "SECONDS"},
        "broadcast enable_events this often, so workers started without -E send task events; 0 = never "
        "(default %(default)s)",
    ),
    (
        "--max-task-names",
        "MAX_TASK_NAMES",
        {"type": positive_int, "field": "max_task_names", "metavar": "N"},
        'distinct task label values at most; later names count under task="other" (default %(default)s)',
    ),
    (
        "--worker-labels",
        "WORKER_LABELS",
        {"action": "store_true"},
        "add a worker label (the hostname) to the worker and active_analyses gauges; one series per pod",
    ),
    (
        "--runtime-buckets",
        "RUNTIME_BUCKETS",
        {"type": buckets, "field": "runtime_buckets", "metavar": "LIST"},
        "bucket bounds of celery_task_runtime_seconds, comma-separated seconds",
    ),
    (
        "--queue-wait-buckets",
        "QUEUE_WAIT_BUCKETS",
        {"type": buckets, "field": "queue_wait_buckets", "metavar": "LIST"},
        "bucket bounds of celery_task_queue_wait_seconds, comma-separated seconds",
    ),
    (
        "--task-expiry",
        "TASK_EXPIRY",
        {"type": positive_float, "field": "task_expiry", "metavar": "SECONDS"},
        "forget a task not heard of for this long (tasks running on live workers are kept) (default %(default)s)",
    ),
    (
        "--max-tracked-tasks",
        "MAX_TRACKED_TASKS",
        {"type": positive_int, "field": "max_tracked_tasks", "metavar": "N"},
        "tasks remembered at most, least recently heard of forgotten first (default %(default)s)",
    ),
    (
        "--series-expiry",
        "SERIES_EXPIRY",
        {"type": positive_float, "field": "series_expiry", "metavar": "SECONDS"},
        "a queue with no live worker and no task for this long leaves the gauges (default %(default)s)",
    ),
)


#: the options the adapter takes too: it consumes events for the running part of the backlog only
ADAPTER_OPTIONS = (
    "--events",
    "--worker-timeout",
    "--worker-drain-timeout",
    "--enable-events-interval",
    "--task-expiry",
    "--max-tracked-tasks",
)


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    defaults = StateConfig()
    for flag, env, settings, help_text in _OPTIONS:
        if only is not None and flag not in only:
            continue
        kwargs = dict(settings)
        field = kwargs.pop("field", None)
        if field is not None:
            kwargs["default"] = getattr(defaults, field)
        add_option(parser, flag, env=f"LENSING_{env}", help=help_text, **kwargs)


def state_config(args: argparse.Namespace, *, learn_acks: bool = False) -> StateConfig:
    """The state's settings from the options; those a face does not take (the adapter) keep their defaults."""
    defaults = StateConfig()
    return StateConfig(
        worker_timeout=args.worker_timeout,
        drain_timeout=getattr(args, "worker_drain_timeout", defaults.drain_timeout),
        task_expiry=args.task_expiry,
        max_tracked_tasks=args.max_tracked_tasks,
        max_task_names=getattr(args, "max_task_names", defaults.max_task_names),
        series_expiry=getattr(args, "series_expiry", defaults.series_expiry),
        analysis_tasks=tuple(getattr(args, "analysis_tasks", None) or ()),
        runtime_buckets=tuple(getattr(args, "runtime_buckets", defaults.runtime_buckets)),
        queue_wait_buckets=tuple(getattr(args, "queue_wait_buckets", defaults.queue_wait_buckets)),
        worker_labels=bool(getattr(args, "worker_labels", False)),
        warmup=min(3.0, args.worker_timeout),
        learn_acks=learn_acks,
    )
