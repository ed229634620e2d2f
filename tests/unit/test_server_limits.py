"""Issue 15: the answer cache keeps only questions asked again, bounded in bytes; a bearer token that is
not UTF-8 authenticates no one (no 500); refused requests log one WARNING a minute at most."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from adapter.apiserver.groups import AnswerCache
from adapter.apiserver.metrics import AdapterStats
from adapter.authn import Authenticator
from lensing_core.net import Rejections


def test_a_question_asked_once_is_not_kept() -> None:
    cache, version = AnswerCache(), object()
    for n in range(2000):
        cache.put(("ns", "m", n), version, b"x" * 1000)
    assert len(cache) == 0 and cache.bytes == 0


def test_a_question_asked_twice_is_kept() -> None:
    cache, version = AnswerCache(), object()
    cache.put("q", version, b"answer")
    assert cache.get("q", version) is None
    cache.put("q", version, b"answer")
    assert cache.get("q", version) == b"answer"


def test_the_cache_is_bounded_in_bytes() -> None:
    cache, version = AnswerCache(limit=1000, max_bytes=160_000), object()
    for n in range(200):
        for _ in range(2):
            cache.put(n, version, b"x" * 10_000)
    assert cache.bytes <= 160_000 and len(cache) == 16
    assert cache.get(199, version) is not None and cache.get(0, version) is None  # the oldest went first


def test_an_answer_too_large_for_the_cache_is_not_kept() -> None:
    cache, version = AnswerCache(max_bytes=1_000), object()
    for _ in range(3):
        cache.put("big", version, b"x" * 100)
    assert len(cache) == 0


class _Settings:
    def current(self) -> Any:
        return None


def test_a_bearer_token_that_is_not_utf8_authenticates_no_one() -> None:
    stats = AdapterStats()
    authenticator = Authenticator(_Settings(), kube=object(), stats=stats)  # type: ignore[arg-type]
    token = b"abc\xff".decode("utf-8", "surrogateescape")  # as aiohttp hands the header on
    assert asyncio.run(authenticator._token(token)) is None
    assert (
        stats.registry.get_sample_value(
            "lensing_adapter_authentication_total", {"method": "token", "result": "failure"}
        )
        == 1
    )


def test_refusals_log_one_warning_a_minute_and_count_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rejections = Rejections("lensing_adapter_http_rejected_total", logging.getLogger("t"), clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="t"):
        for n in range(1000):
            now[0] = n * 0.1  # 100 s
            rejections.reject("bad_request", "peer")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "bad_request 600" in warnings[1].getMessage()
    assert all(r.exc_info is None for r in caplog.records)
    family = next(iter(rejections.collect()))
    assert {s.labels["reason"]: s.value for s in family.samples}["bad_request"] == 1000
