"""`lensing-metrics exporter` (also `python -m exporter`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from exporter.app import MAX_CONNECTIONS, Exporter
from exporter.sources import BrokerSource, Source, events, gpu
from lensing_core.brokers import BrokerConfigError, open_reader, redact_url
from lensing_core.cli_args import add_broker_arguments, add_connection_arguments, add_logging_arguments, limits_from
from lensing_core.logsetup import configure_logging
from lensing_core.options import ArgumentParser, add_option, host_port
from lensing_core.poller import BrokerPoller

log = logging.getLogger("exporter")

DESCRIPTION = """\
Serve Celery queue depth (waiting, in flight, delayed), Celery event metrics and GPU metrics to Prometheus.

The broker is read in the background every --poll-interval seconds (Redis: one round trip per read,
whatever the number of queues); /metrics answers from the last read. While the broker cannot be read,
the queue series are absent and celery_broker_up is 0: never a made-up zero. Reads retry with backoff.
"""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or ArgumentParser(prog="lensing-metrics exporter")
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
    add_connection_arguments(parser, "LENSING_", max_connections=MAX_CONNECTIONS)
    add_logging_arguments(parser)
    events.add_arguments(parser)
    gpu.add_arguments(parser)
    return parser


def build_sources(args: argparse.Namespace) -> list[Source]:
    """All sources the options ask for. Raises BrokerConfigError for unusable broker settings.

    A broker URL is required, except for a GPU-only exporter (``--gpu on`` and no URL: the DaemonSet
    on GPU nodes), which serves GPU metrics alone.
    """
    sources: list[Source] = []
    event_source = events.build_source(args)
    if args.broker_url or args.gpu != "on":
        reader = open_reader(args.broker_url, args.transport_options, args.queues)
        poller = BrokerPoller(reader, args.poll_interval, url_for_logs=args.broker_url)
        running = event_source.running if event_source is not None else None
        version = event_source.running_version if event_source is not None else None
        ready_within = max(3 * args.poll_interval, 10.0)
        sources.append(BrokerSource(poller, ready_within=ready_within, running=running, running_version=version))
    for extra in (event_source, gpu.build_source(args)):
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
    if args.broker_url:
        log.info(
            "watching %s (%s)",
            redact_url(args.broker_url),
            ", ".join(args.queues) if args.queues else "queues discovered from the broker",
        )
    else:
        log.info("no broker URL: serving GPU metrics only")
    exporter = Exporter(sources)
    try:
        asyncio.run(exporter.serve(*args.listen, limits=limits_from(args)))
    except OSError as exc:
        print(
            f"lensing-metrics exporter: error: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
