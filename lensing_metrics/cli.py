"""`lensing-metrics`: one command, a subcommand per program."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lensing_core.options import ArgumentParser
from lensing_metrics import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="lensing-metrics",
        description="Celery queue, event and GPU metrics for Prometheus, and the metrics APIs the HPA reads.",
    )
    parser.add_argument("--version", action="version", version=f"lensing-metrics {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser)

    from exporter import cli as exporter_cli

    exporter_cli.build_parser(
        sub.add_parser(
            "exporter",
            help="serve queue, event and GPU metrics to Prometheus",
            prog="lensing-metrics exporter",
        )
    )
    from adapter import cli as adapter_cli

    adapter_cli.build_parser(
        sub.add_parser("adapter", help="serve external.metrics.k8s.io to the HPA", prog="lensing-metrics adapter")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "exporter":
        from exporter import cli as exporter_cli

        return exporter_cli.run(args)
    from adapter import cli as adapter_cli

    return int(adapter_cli.run(args))


if __name__ == "__main__":
    sys.exit(main())
