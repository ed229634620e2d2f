"""The broker poller's retry schedule: back off from a broker that answers badly, not from one that is
restarting, and start again from the poll interval at the first good read."""

from __future__ import annotations

from collections.abc import Iterator

from lensing_core.brokers import BrokerReadError, BrokerSnapshot
from lensing_core.poller import BrokerPoller


class ScriptedReader:
    transport = "redis"

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes: Iterator[str] = iter(outcomes)

    def read(self) -> BrokerSnapshot:
        outcome = next(self.outcomes)
        if outcome != "ok":
            raise BrokerReadError(outcome, outcome)
        return BrokerSnapshot({}, 0.0, 0.0)

    def close(self) -> None:
        pass


def schedule(outcomes: list[str], interval: float = 1.0, max_backoff: float = 30.0) -> list[float]:
    poller = BrokerPoller(ScriptedReader(outcomes), interval, max_backoff=max_backoff)  # type: ignore[arg-type]
    delays = []
    for _ in outcomes:
        poller.poll_once()
        delays.append(poller.next_delay())
    return delays


def test_a_broker_that_times_out_is_backed_off_from_and_the_first_good_read_resets_it() -> None:
    assert schedule(["timeout"] * 7 + ["ok", "timeout"]) == [1, 2, 4, 8, 16, 30, 30, 1, 1]


def test_a_flapping_broker_is_retried_every_interval_while_nothing_listens() -> None:
    # refused connections (a broker restarting) cost it nothing: retried each interval, so the values
    # are back within one interval of its return however long it was away
    outcomes = (["connection"] * 40 + ["ok"] * 3) * 3
    assert set(schedule(outcomes, interval=0.5)) == {0.5}


def test_timeouts_then_refusals_keep_the_backoff_reached() -> None:
    assert schedule(["timeout", "timeout", "connection", "ok"]) == [1, 2, 2, 1]
