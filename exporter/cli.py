"""`lensing-metrics exporter` (also `python -m exporter`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from exporter import events, gpu
from exporter.app import Exporter
from exporter.brokers import BrokerConfigError, open_reader, redact_url
from exporter.poller import BrokerPoller
from exporter.sources import BrokerSource, Source
from lensing_metrics.logsetup import LOG_FORMATS, LOG_LEVELS, configure_logging
from lensing_metrics.options import add_option, host_port, positive_float

log = logging.getLogger("exporter")

DESCRIPTION = """\
Serve Celery queue depth (waiting, in flight, delayed), Celery event metrics and GPU metrics to Prometheus.

The broker is read in the background every --poll-interval seconds (Redis: one round trip per read,
whatever the number of queues); /metrics answers from the last read. While the broker cannot be read,
the queue series are absent and celery_broker_up is 0: never a made-up zero. Reads retry with backoff.
"""


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """The broker options shared by the exporter and the adapter."""
    add_option(
        parser,
        "--broker-url",
        env="CELERY_BROKER_URL",
        default="",
        help="Celery broker URL: redis://, rediss:// (TLS), sentinel://h1:26379;sentinel://h2:26379, "
        "amqp://, amqps://, sqs://",
    )
    add_option(
        parser,
        "--broker-transport-option",
        dest="transport_options",
        action="append",
        metavar="KEY=VALUE",
        env="CELERY_BROKER_TRANSPORT_OPTIONS",
        env_parser=transport_options_from_env,
        help="Celery broker_transport_options entry, repeatable; VALUE may be JSON. Redis: global_keyprefix, "
        "sep, priority_steps, unacked_key, master_name, sentinel_kwargs; RabbitMQ: management_url (enables "
        "discovery and in-flight counts); SQS: queue_name_prefix, predefined_queues, region, endpoint_url. "
        "The variable holds a JSON object or KEY=VALUE entries separated by ';'",
    )
    add_option(
        parser,
        "--queue",
        dest="queues",
        action="append",
        metavar="NAME",
        env="LENSING_QUEUES",
        help="queue to watch, repeatable; default: discover queues from the broker (Redis bindings, "
        "SQS prefix listing or predefined_queues, RabbitMQ management API)",
    )
    add_option(
        parser,
        "--poll-interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        env="LENSING_POLL_INTERVAL",
        help="seconds between broker reads (default 1)",
    )


def transport_options_from_env(raw: str) -> list[str]:
    """``{"global_keyprefix": "app:"}`` or ``global_keyprefix=app:;sep=.`` as KEY=VALUE items."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON object: {exc}") from None
        if not isinstance(mapping, dict):
            raise ValueError("expected a JSON object")
        return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in mapping.items()]
    return [item.strip() for item in text.split(";") if item.strip()]


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(
        parser,
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        env="LENSING_LOG_LEVEL",
        help="log level (default info)",
    )
    add_option(
        parser,
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        env="LENSING_LOG_FORMAT",
        help="log format (default text)",
    )


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="lensing-metrics exporter")
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_broker_arguments(parser)
    add_option(
        parser,
        "--listen",
        type=host_port,
        default=("0.0.0.0", 9808),
        metavar="HOST:PORT",
        env="LENSING_LISTEN",
        help="address of /metrics, /healthz, /readyz (default 0.0.0.0:9808)",
    )
    add_logging_arguments(parser)
    events.add_arguments(parser)
    gpu.add_arguments(parser)
    return parser


def build_sources(args: argparse.Namespace) -> list[Source]:
    """All sources the options ask for. Raises BrokerConfigError for unusable broker settings."""
    reader = open_reader(args.broker_url, args.transport_options, args.queues)
    poller = BrokerPoller(reader, args.poll_interval, url_for_logs=args.broker_url)
    sources: list[Source] = [BrokerSource(poller, ready_within=max(3 * args.poll_interval, 10.0))]
    for extra in (events.build_source(args), gpu.build_source(args)):
        if extra is not None:
            sources.append(extra)
    return sources


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    try:
        sources = build_sources(args)
    except BrokerConfigError as exc:
        print(f"lensing-metrics exporter: error: {exc}", file=sys.stderr)
        return 2
    log.info(
        "watching %s (%s)",
        redact_url(args.broker_url),
        ", ".join(args.queues) if args.queues else "queues discovered from the broker",
    )
    exporter = Exporter(sources)
    try:
        asyncio.run(exporter.serve(*args.listen))
    except OSError as exc:
        print(
            f"lensing-metrics exporter: error: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
