"""Event options, their environment fallbacks, and decoding of the messages Celery publishes."""

from __future__ import annotations

import base64
import json

import pytest

from exporter.cli import build_parser
from exporter.sources import events
from lensing_sources.events.decode import DropMessage, decode_body, decode_kombu_envelope
from lensing_sources.events.options import state_config

# A worker-heartbeat exactly as a Celery 5.7 worker published it on Redis (captured with PSUBSCRIBE).
RECORDED = (
    b'{"body": "eyJob3N0bmFtZSI6ICJ0ZXN0LTcyMjJhNzUwQHZtIiwgInV0Y29mZnNldCI6IDAuMCwgInBpZCI6IDIwNTg3LCAiY2xvY2siOiA3'
    b"LCAiZnJlcSI6IDIuMCwgImFjdGl2ZSI6IDAsICJwcm9jZXNzZWQiOiAwLCAibG9hZGF2ZyI6IFsxLjA1LCAxLjk1LCAxLjUxXSwgInN3X2lkZW"
    b"50IjogInB5LWNlbGVyeSIsICJzd192ZXIiOiAiNS43LjAiLCAic3dfc3lzIjogIkxpbnV4IiwgInRpbWVzdGFtcCI6IDE3OTU3NTcxNTQuMTY0"
    b'NDg3NiwgInR5cGUiOiAid29ya2VyLWhlYXJ0YmVhdCJ9", "content-encoding": "utf-8", "content-type": "application/json"'
    b', "headers": {"hostname": "test-7222a750@vm"}, "properties": {"delivery_mode": 1, "delivery_info": {"exchange":'
    b' "celeryev", "routing_key": "worker.heartbeat"}, "priority": 0, "body_encoding": "base64", "delivery_tag": '
    b'"d2b41cd2-b62e-4747-99d7-a2fd6fb4da83"}}'
)


def test_recorded_heartbeat_decodes() -> None:
    [event] = decode_kombu_envelope(RECORDED)
    assert event["type"] == "worker-heartbeat"
    assert event["hostname"] == "test-7222a750@vm"
    assert event["active"] == 0 and event["freq"] == 2.0 and event["clock"] == 7


def test_buffered_task_events_arrive_as_a_list() -> None:
    body = json.dumps([{"type": "task-received", "uuid": "a"}, {"type": "task-started", "uuid": "a"}])
    envelope = json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-type": "application/json",
            "properties": {"body_encoding": "base64"},
        }
    )
    assert [e["type"] for e in decode_kombu_envelope(envelope)] == ["task-received", "task-started"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "malformed"),
        (json.dumps({"body": "@@", "properties": {"body_encoding": "base64"}}).encode(), "malformed"),
        (json.dumps({"body": "x", "content-type": "application/x-python-serialize"}).encode(), "serializer"),
    ],
)
def test_undecodable_messages_name_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DropMessage) as info:
        decode_kombu_envelope(payload)
    assert info.value.reason == reason


def test_compressed_bodies_are_dropped() -> None:
    with pytest.raises(DropMessage, match="compressed"):
        decode_body(b"x", "application/json", {"compression": "application/x-gzip"})


def test_defaults_and_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENSING_ANALYSIS_TASKS", "lensing.analyse_*,fit.*")
    monkeypatch.setenv("LENSING_WORKER_TIMEOUT", "7")
    monkeypatch.setenv("LENSING_RUNTIME_BUCKETS", "1,10,100")
    args = build_parser().parse_args(["--broker-url", "redis://127.0.0.1:6379/0"])
    config = state_config(args)
    assert args.events is True and args.enable_events_interval == 60.0
    assert config.analysis_tasks == ("lensing.analyse_*", "fit.*")
    assert config.worker_timeout == 7.0
    assert config.runtime_buckets == (1.0, 10.0, 100.0)
    assert config.max_task_names == 200 and not config.worker_labels


def test_no_events_and_sqs_build_no_source(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["--broker-url", "redis://127.0.0.1:6379/0", "--no-events"])
    assert events.build_source(args) is None
    monkeypatch.setenv("LENSING_EVENTS", "false")
    assert build_parser().parse_args(["--broker-url", "redis://x:1/0"]).events is False
    args = build_parser().parse_args(["--broker-url", "sqs://", "--events"])
    assert events.build_source(args) is None
    args = build_parser().parse_args(["--broker-url", ""])  # a GPU-only exporter
    assert events.build_source(args) is None


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--runtime-buckets", "5,1", "expected increasing numbers"),
        ("--queue-wait-buckets", "a,b", "expected increasing numbers"),
        ("--max-task-names", "0", "must be a whole number >= 1"),
        ("--worker-timeout", "0", "must be a number above 0"),
        ("--enable-events-interval", "-1", "must be a number >= 0"),
    ],
)
def test_bad_values_exit_2_with_one_line(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--broker-url", "redis://x:1/0", flag, value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
