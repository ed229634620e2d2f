"""Options, environment fallbacks and bad input of `lensing-metrics exporter` (no broker needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter import cli
from lensing_core.brokers import BrokerConfigError, open_reader, transport_of
from lensing_core.brokers.options import parse_transport_options
from tests.support.services import REPO


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("kafka://broker:9092", "unknown broker transport 'kafka'"),
        ("localhost:6379", "is not a URL"),
        ("redis://127.0.0.1:notaport/0", "port"),
        ("redis://127.0.0.1:6379/zero", "database number"),
        ("sentinel://127.0.0.1:26379", "master_name"),
    ],
)
def test_unusable_broker_url_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], url: str, needle: str) -> None:
    code, lines = run_cli(capsys, "--broker-url", url, "--listen", "127.0.0.1:0")
    assert code == 2
    assert len(lines) == 1, lines
    assert needle in lines[0]
    if "transport" in needle or "not a URL" in needle:
        assert "accepted: redis://" in lines[0]


def test_missing_broker_url_names_the_variable(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    code, lines = run_cli(capsys, "--listen", "127.0.0.1:0")
    assert code == 2 and len(lines) == 1 and "CELERY_BROKER_URL" in lines[0]


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("global_keyprefix", "expected KEY=VALUE"),
        ("priority_steps=three", "priority_steps"),
        ("priority_steps=[-1,3]", "priority_steps"),
        ("sep=", "sep"),
        ("socket_timeout=soon", "socket_timeout"),
    ],
)
def test_malformed_transport_option_names_it(capsys: pytest.CaptureFixture[str], option: str, needle: str) -> None:
    code, lines = run_cli(
        capsys, "--broker-url", "redis://127.0.0.1:1/0", "--broker-transport-option", option, "--listen", "127.0.0.1:0"
    )
    assert code == 2 and len(lines) == 1, lines
    assert needle in lines[0] and "--broker-transport-option" in lines[0]


def test_bad_poll_interval_and_listen_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--poll-interval", "0"], ["--listen", "nowhere"]):
        code, lines = run_cli(capsys, "--broker-url", "redis://x/0", *argv)
        assert code == 2
        assert lines[-1].startswith("lensing-metrics exporter: error: argument")


def test_transport_option_values() -> None:
    opts = parse_transport_options(
        ["global_keyprefix=app:", "sep=\\x06\\x16", "priority_steps=[0,5,9]", "master_name=m", "unknown=1"], "redis"
    )
    assert opts == {"global_keyprefix": "app:", "sep": "\x06\x16", "priority_steps": [0, 5, 9], "master_name": "m"}
    assert parse_transport_options(["priority_steps=0,3"], "redis")["priority_steps"] == [0, 3]
    sqs = parse_transport_options(['predefined_queues={"a": {"url": "http://x/1/a"}}', "is_secure=false"], "sqs")
    assert sqs == {"predefined_queues": {"a": {"url": "http://x/1/a"}}, "is_secure": False}
    with pytest.raises(BrokerConfigError, match="predefined_queues"):
        parse_transport_options(["predefined_queues=[1]"], "sqs")
    with pytest.raises(BrokerConfigError, match='needs a "url"'):
        open_reader("sqs://", ['predefined_queues={"a": {}}'])
    with pytest.raises(BrokerConfigError, match="RabbitMQ cannot list"):
        open_reader("amqp://guest:guest@127.0.0.1:1//")


def test_transport_families() -> None:
    assert transport_of("rediss://h:6380/0?ssl_cert_reqs=required") == "redis"
    assert transport_of("sentinel://a:26379;sentinel://b:26379") == "redis"
    assert transport_of("pyamqp://guest@h//") == "amqp"
    assert transport_of("sqs://") == "sqs"


def test_environment_fallbacks(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://10.0.0.1:6379/3")
    monkeypatch.setenv("LENSING_QUEUES", "analyses, cpu")
    monkeypatch.setenv("CELERY_BROKER_TRANSPORT_OPTIONS", '{"global_keyprefix": "lens:", "priority_steps": [0, 9]}')
    monkeypatch.setenv("LENSING_LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("LENSING_POLL_INTERVAL", "2.5")
    monkeypatch.setenv("LENSING_LOG_FORMAT", "json")
    args = cli.build_parser().parse_args([])
    assert args.broker_url == "redis://10.0.0.1:6379/3"
    assert args.queues == ["analyses", "cpu"]
    assert args.transport_options == ["global_keyprefix=lens:", "priority_steps=[0, 9]"]
    assert args.listen == ("127.0.0.1", 9999)
    assert args.poll_interval == 2.5
    assert args.log_format == "json"
    # a flag replaces the environment's list instead of extending it
    assert cli.build_parser().parse_args(["--queue", "gpu"]).queues == ["gpu"]
    monkeypatch.setenv("CELERY_BROKER_TRANSPORT_OPTIONS", "global_keyprefix=a:;sep=.")
    assert cli.build_parser().parse_args([]).transport_options == ["global_keyprefix=a:", "sep=."]


def test_bad_environment_value_exits_2(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LENSING_POLL_INTERVAL", "often")
    with pytest.raises(SystemExit) as exc:
        cli.build_parser()
    assert exc.value.code == 2
    assert "LENSING_POLL_INTERVAL" in capsys.readouterr().err


def test_help_lists_every_option_with_its_variable() -> None:
    parser = cli.build_parser()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {"--broker-url", "--broker-transport-option", "--queue", "--listen", "--poll-interval"} <= {
        a.option_strings[0] for a in options
    }
    for action in options:
        assert action.help and "[env " in action.help, action.option_strings
    for command in (
        [sys.executable, "-m", "exporter", "--help"],
        [sys.executable, "-m", "lensing_metrics.cli", "exporter", "--help"],
    ):
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
        for env in (
            "CELERY_BROKER_URL",
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            "LENSING_QUEUES",
            "LENSING_LISTEN",
            "LENSING_POLL_INTERVAL",
            "LENSING_LOG_LEVEL",
            "LENSING_LOG_FORMAT",
        ):
            assert f"[env {env}]" in " ".join(out.split()), (command, env)
