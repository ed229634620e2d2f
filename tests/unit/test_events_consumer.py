"""The consumer thread survives a failing stream and a bug in decoding: it reports, reconnects, goes on."""

from __future__ import annotations

from typing import Any

from lensing_sources.events.consumer import EventConsumer
from lensing_sources.events.state import EventState, StateConfig
from lensing_sources.events.stream import StreamError
from tests.support.services import wait_for


class FlakyStream:
    description = "fake"

    def __init__(self) -> None:
        self.sessions = 0
        self.reads = 0

    def connect(self) -> None:
        self.sessions += 1
        if self.sessions == 2:
            raise StreamError("connection", "refused once")

    def read(self, timeout: float) -> list[Any]:
        self.reads += 1
        if self.sessions == 1 and self.reads == 1:
            return ["boom"]  # decode raises an unexpected error: a bug, not a bad message
        return [{"type": "worker-heartbeat", "hostname": "w", "pid": 1, "active": 0, "freq": 2.0}]

    def decode(self, payload: Any) -> list[Any]:
        if payload == "boom":
            raise RuntimeError("bug")
        return [payload]

    def close(self) -> None:
        pass


def test_consumer_outlives_bugs_and_lost_connections() -> None:
    state = EventState(StateConfig())
    stream = FlakyStream()
    consumer = EventConsumer(stream, state, max_backoff=0.05)  # type: ignore[arg-type]
    consumer.start()
    try:
        wait_for(lambda: stream.sessions >= 3 and state.received > 0, 10, what="third session reading")
        assert state.connected
        assert state.reconnects == 1  # the second session failed to connect; the third made it
        assert "w" in state.workers
    finally:
        consumer.stop()
