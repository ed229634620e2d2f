"""A short broker kill/restart soak under scrape load (the long one: benchmarks/broker_soak.py, figures in
docs/benchmarks.md): no made-up, stale or wrong value, and the values back within 2 x the poll interval
of the broker's return however long it was away (the poller's backoff does not outlast an outage)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def load_soak():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("broker_soak", ROOT / "benchmarks" / "broker_soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_ten_broker_kills_under_scrape_load() -> None:
    interval = 0.5
    result = load_soak().soak(cycles=10, poll_interval=interval, scrapers=2, seed=7, down_max=5.0, log=False)
    assert result.scrapes > 500
    assert (result.made_up, result.stale, result.wrong) == ([], [], [])
    assert result.not_recovered == 0 and not result.restarts_of_exporter
    assert len(result.recovery) == 10
    assert max(result.recovery) <= 2 * interval, sorted(result.recovery)
