"""`lensing-metrics adapter` (also `python -m adapter`). Filled in by issue #5."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="lensing-metrics adapter")
    parser.description = "Serve external.metrics.k8s.io to the Kubernetes aggregation layer (not built yet)."
    return parser


def run(args: argparse.Namespace) -> int:
    print("lensing-metrics adapter: not built yet", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
