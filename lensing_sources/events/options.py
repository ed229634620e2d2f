"""Options of the event consumer, each with its environment variable."""

from __future__ import annotations

import argparse
import itertools

from exporter.events.state import StateConfig
from lensing_metrics.options import add_option, positive_float


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def buckets(text: str) -> tuple[float, ...]:
    """``0.5,1,5,30``: increasing upper bounds in seconds (+Inf is always added)."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected increasing numbers such as 0.5,1,5,30, got {text!r}") from None
    if not values or any(b <= a for a, b in itertools.pairwise(values)) or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected increasing numbers above 0 such as 0.5,1,5,30, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StateConfig()
    add_option(
        parser,
        "--events",
        action=argparse.BooleanOptionalAction,  # type: ignore[arg-type]  # add_option passes any action through
        type=_bool,
        default=True,
        env="LENSING_EVENTS",
        help="consume the Celery event stream (default on)",
    )
    add_option(
        parser,
        "--analysis-task",
        dest="analysis_tasks",
        action="append",
        metavar="PATTERN",
        env="LENSING_ANALYSIS_TASKS",
        help="task names counted in active_analyses, a shell glob such as 'lensing.analyse_*', repeatable "
        "(default: every task)",
    )
    add_option(
        parser,
        "--worker-timeout",
        type=positive_float,
        default=defaults.worker_timeout,
        metavar="SECONDS",
        env="LENSING_WORKER_TIMEOUT",
        help="a worker silent this long is gone: it leaves celery_workers and its tasks leave active_analyses "
        "(default %(default)s; keep it above the workers' heartbeat interval, 2 s by default)",
    )
    add_option(
        parser,
        "--enable-events-interval",
        type=_non_negative,
        default=60.0,
        metavar="SECONDS",
        env="LENSING_ENABLE_EVENTS_INTERVAL",
        help="broadcast enable_events this often, so workers started without -E send task events; 0 = never "
        "(default %(default)s)",
    )
    add_option(
        parser,
        "--max-task-names",
        type=_positive_int,
        default=defaults.max_task_names,
        metavar="N",
        env="LENSING_MAX_TASK_NAMES",
        help='distinct task label values at most; later names count under task="other" (default %(default)s)',
    )
    add_option(
        parser,
        "--worker-labels",
        action="store_true",
        env="LENSING_WORKER_LABELS",
        help="add a worker label (the hostname) to the worker and active_analyses gauges; one series per pod",
    )
    add_option(
        parser,
        "--runtime-buckets",
        type=buckets,
        default=defaults.runtime_buckets,
        metavar="LIST",
        env="LENSING_RUNTIME_BUCKETS",
        help="bucket bounds of celery_task_runtime_seconds, comma-separated seconds",
    )
    add_option(
        parser,
        "--queue-wait-buckets",
        type=buckets,
        default=defaults.queue_wait_buckets,
        metavar="LIST",
        env="LENSING_QUEUE_WAIT_BUCKETS",
        help="bucket bounds of celery_task_queue_wait_seconds, comma-separated seconds",
    )
    add_option(
        parser,
        "--task-expiry",
        type=positive_float,
        default=defaults.task_expiry,
        metavar="SECONDS",
        env="LENSING_TASK_EXPIRY",
        help="forget a task not heard of for this long (tasks running on live workers are kept) (default %(default)s)",
    )
    add_option(
        parser,
        "--max-tracked-tasks",
        type=_positive_int,
        default=defaults.max_tracked_tasks,
        metavar="N",
        env="LENSING_MAX_TRACKED_TASKS",
        help="tasks remembered at most, least recently heard of forgotten first (default %(default)s)",
    )
    add_option(
        parser,
        "--series-expiry",
        type=positive_float,
        default=defaults.series_expiry,
        metavar="SECONDS",
        env="LENSING_SERIES_EXPIRY",
        help="a queue with no live worker and no task for this long leaves the gauges (default %(default)s)",
    )


def state_config(args: argparse.Namespace) -> StateConfig:
    return StateConfig(
        worker_timeout=args.worker_timeout,
        task_expiry=args.task_expiry,
        max_tracked_tasks=args.max_tracked_tasks,
        max_task_names=args.max_task_names,
        series_expiry=args.series_expiry,
        analysis_tasks=tuple(args.analysis_tasks or ()),
        runtime_buckets=tuple(args.runtime_buckets),
        queue_wait_buckets=tuple(args.queue_wait_buckets),
        worker_labels=bool(args.worker_labels),
        warmup=min(3.0, args.worker_timeout),
    )
