"""What every broker reader returns, and the one interface they share."""

from __future__ import annotations

import abc
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


class BrokerConfigError(ValueError):
    """The broker URL or a transport option is not usable; the message says what and what is accepted."""


class BrokerReadError(RuntimeError):
    """The broker could not be read this time. ``reason`` is a short, bounded label value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One queue at one instant. ``None`` means the broker cannot tell, never "zero"."""

    waiting: int
    inflight: int | None = None
    delayed: int | None = None
    #: task ids of the in-flight (unacknowledged) messages where the broker tells them (Redis); None elsewhere.
    #: The backlog (lensing_sources.backlog) unites them with the running tasks.
    unacked_ids: frozenset[str] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    """Everything one read of a broker saw. Readers build a new one each read; nobody mutates it."""

    queues: Mapping[str, QueueDepth]
    read_at: float  # wall-clock time (time.time()) when the read finished
    duration: float  # seconds the read took
    details: Mapping[str, str] = field(default_factory=dict)


# Queues Celery itself creates for remote control and events; never work queues.
DEFAULT_EXCLUDED_QUEUES: tuple[str, ...] = ("*.pidbox", "celeryev.*", "*.reply.celery.pidbox")


def is_excluded(queue: str, patterns: Iterable[str] = DEFAULT_EXCLUDED_QUEUES) -> bool:
    return any(fnmatch.fnmatchcase(queue, pattern) for pattern in patterns)


class QueueReader(abc.ABC):
    """Reads the depth of Celery queues from one broker.

    ``read()`` is called from one background thread at a time; it either returns a complete
    snapshot or raises :class:`BrokerReadError`. It never returns partial or guessed numbers.
    """

    #: the URL scheme family, used in logs and the ``broker`` label of health metrics
    transport: str = "unknown"

    def __init__(self, queues: Iterable[str] = ()) -> None:
        self.configured_queues: tuple[str, ...] = tuple(dict.fromkeys(queues))

    @abc.abstractmethod
    def read(self) -> BrokerSnapshot:
        """One read of every queue (configured or discovered)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""
