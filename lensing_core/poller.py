"""Reads a broker in the background, keeps the last good snapshot, backs off while the broker is down."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from lensing_core.background import BackgroundThread
from lensing_core.brokers import BrokerReadError, BrokerSnapshot, QueueReader, redact_url

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollState:
    """What the poller knows now. ``snapshot`` is the last good read, which may be old when ``up`` is False."""

    up: bool
    snapshot: BrokerSnapshot | None
    last_error: str | None
    last_error_reason: str | None
    last_attempt_at: float | None


class BrokerPoller:
    """Calls ``reader.read()`` every ``interval`` seconds on its own thread.

    On failure it retries with exponential backoff (interval, 2x, 4x ... ``max_backoff``) and logs
    once when the broker goes down and once when it comes back, not on every try. A refused connection
    (nothing listening: the broker is restarting) is retried every interval instead, which costs the broker
    no more than polling it does and brings the values back within an interval of its return; the first
    good read resets the backoff.
    """

    def __init__(
        self,
        reader: QueueReader,
        interval: float = 1.0,
        *,
        max_backoff: float = 30.0,
        name: str = "broker",
        url_for_logs: str = "",
    ) -> None:
        self.reader = reader
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.name = name
        self.url_for_logs = redact_url(url_for_logs) if url_for_logs else reader.transport
        self.errors: Counter[str] = Counter()
        self.reads_total = 0
        self._state = PollState(up=False, snapshot=None, last_error=None, last_error_reason=None, last_attempt_at=None)
        self._listeners: list[Callable[[PollState], None]] = []
        self._worker = BackgroundThread(self._run, name=f"poll-{name}", on_crash=self._crashed)
        self._stop = self._worker.stopping
        self._failures = 0
        self._backoff_failures = 0  # failures in a row that call for backing off (not a refused connection)

    @property
    def state(self) -> PollState:
        return self._state  # replaced whole on each read, so a reader never sees half an update

    def add_listener(self, listener: Callable[[PollState], None]) -> None:
        """``listener(state)`` runs on the poll thread after every read; keep it short."""
        self._listeners.append(listener)

    def poll_once(self) -> PollState:
        attempt_at = time.time()
        try:
            snapshot = self.reader.read()
        except BrokerReadError as exc:
            self.errors[exc.reason] += 1
            self._failures += 1
            if exc.reason != "connection":
                self._backoff_failures += 1
            if self._state.up or self._failures == 1:
                log.warning(
                    "%s %s cannot be read (%s): %s; retrying with backoff",
                    self.name,
                    self.url_for_logs,
                    exc.reason,
                    exc,
                )
            self._state = PollState(False, self._state.snapshot, str(exc), exc.reason, attempt_at)
        except Exception as exc:  # a bug in a reader must not kill the thread; it is reported as a failed read
            self.errors["internal"] += 1
            self._failures += 1
            self._backoff_failures += 1
            log.exception("%s reader failed unexpectedly", self.name)
            self._state = PollState(False, self._state.snapshot, repr(exc), "internal", attempt_at)
        else:
            self.reads_total += 1
            if not self._state.up:
                log.info(
                    "%s %s read: %d queues in %.1f ms",
                    self.name,
                    self.url_for_logs,
                    len(snapshot.queues),
                    snapshot.duration * 1000,
                )
            self._failures = self._backoff_failures = 0
            self._state = PollState(True, snapshot, None, None, attempt_at)
        for listener in self._listeners:
            try:
                listener(self._state)
            except Exception:
                log.exception("poll listener failed")
        return self._state

    def next_delay(self) -> float:
        if self._backoff_failures == 0:
            return self.interval
        return min(self.interval * (2 ** (self._backoff_failures - 1)), self.max_backoff)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            delay = self.next_delay() - (time.monotonic() - started)
            self._stop.wait(max(delay, 0.0))

    def _crashed(self, exc: BaseException | None) -> None:
        """The poll loop died (it is restarted): until its next read the broker reads as down."""
        self.errors["internal"] += 1
        self._state = PollState(False, self._state.snapshot, repr(exc), "internal", time.time())

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()
        self.reader.close()
