"""The one way this project runs a long-lived loop in the background, watched.

A loop that raises (or returns without being asked to stop) is logged, counted in :data:`restarts` by
loop name (``lensing_background_restarts_total``), reported to its owner's ``on_crash`` so that the
source it feeds reads as down, and started again after a backoff. Both thread loops
(:class:`BackgroundThread`) and asyncio loops (:func:`supervise`) go through :class:`Supervision`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from lensing_core import catalog

log = logging.getLogger(__name__)

#: restarts after an unexpected exit, by loop name; read by the faces' metrics
restarts: Counter[str] = Counter()
_restarts_lock = threading.Lock()

MIN_BACKOFF = 0.5
MAX_BACKOFF = 30.0


def restart_counts() -> dict[str, int]:
    with _restarts_lock:
        return dict(restarts)


class RestartCollector(Collector):
    """``lensing_background_restarts_total{loop}``: each face registers one."""

    def describe(self) -> Iterator[Metric]:
        return catalog.describe("process")

    def collect(self) -> Iterator[Metric]:
        family = catalog.counter("lensing_background_restarts_total")
        for loop, count in sorted(restart_counts().items()):
            family.add_metric([loop], count)
        yield family


class Supervision:
    """The policy shared by thread and asyncio loops: count, log, tell the owner, pick the next delay.

    The delay doubles with each crash in a row (``min_backoff`` .. ``max_backoff``) and starts again
    from ``min_backoff`` after a run that lasted longer than ``max_backoff``.
    """

    def __init__(
        self,
        name: str,
        on_crash: Callable[[BaseException | None], None] | None = None,
        *,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.name = name
        self.on_crash = on_crash
        self.min_backoff = min_backoff
        self.max_backoff = max(max_backoff, min_backoff)
        self.crashes_in_a_row = 0
        self.down = False  # between a crash and the restart

    def crashed(self, exc: BaseException | None, ran_for: float) -> float:
        """Record one unexpected exit; the seconds to wait before the restart."""
        self.crashes_in_a_row = 1 if ran_for > self.max_backoff else self.crashes_in_a_row + 1
        with _restarts_lock:
            restarts[self.name] += 1
        delay = min(self.min_backoff * 2 ** (self.crashes_in_a_row - 1), self.max_backoff)
        if exc is None:
            log.error("background loop %s returned unexpectedly; restarting in %.1fs", self.name, delay)
        else:
            log.error("background loop %s failed; restarting in %.1fs", self.name, delay, exc_info=exc)
        if self.on_crash is not None:
            try:
                self.on_crash(exc)
            except Exception:
                log.exception("on_crash of %s failed", self.name)
        self.down = True  # after on_crash: whoever sees the loop down sees its source down too
        return delay


class BackgroundThread:
    """A daemon thread running ``target`` until ``stop()``, restarted with backoff when it fails;
    ``start()`` and ``stop()`` may be called twice.

    ``target`` loops while ``stopping`` is not set and sleeps with ``stopping.wait(seconds)``, so a stop
    is honoured within one wait rather than after a whole interval. ``on_crash(exc)`` runs on the thread
    after each unexpected exit (``exc`` None when ``target`` returned without a stop): mark the source down.
    """

    def __init__(
        self,
        target: Callable[[], None],
        name: str,
        *,
        on_crash: Callable[[BaseException | None], None] | None = None,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.target = target
        self.name = name
        self.stopping = threading.Event()
        self.supervision = Supervision(name, on_crash, min_backoff=min_backoff, max_backoff=max_backoff)
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        """Running and not waiting to restart after a crash."""
        return self.running and not self.supervision.down

    def start(self) -> None:
        if self._thread is None:
            self.stopping.clear()
            self._thread = threading.Thread(target=self._supervise, name=self.name, daemon=True)
            self._thread.start()

    def _supervise(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            error: BaseException | None = None
            try:
                self.target()
            except Exception as exc:
                error = exc
            if self.stopping.is_set():
                return
            delay = self.supervision.crashed(error, time.monotonic() - started)
            self.stopping.wait(delay)
            self.supervision.down = False

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None


async def supervise(
    loop: Callable[[], Awaitable[None]],
    name: str,
    *,
    on_crash: Callable[[BaseException | None], None] | None = None,
    min_backoff: float = MIN_BACKOFF,
    max_backoff: float = MAX_BACKOFF,
) -> None:
    """Run the coroutine ``loop()`` until cancelled, restarting it with backoff when it fails."""
    supervision = Supervision(name, on_crash, min_backoff=min_backoff, max_backoff=max_backoff)
    while True:
        started = time.monotonic()
        error: BaseException | None = None
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        await asyncio.sleep(supervision.crashed(error, time.monotonic() - started))
        supervision.down = False
