"""Celery event-stream metrics (active analyses, task and worker state). Filled in by issue #3."""

from __future__ import annotations

import argparse

from exporter.sources import Source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the event consumer (added to `lensing-metrics exporter`)."""


def build_source(args: argparse.Namespace) -> Source | None:
    """The event consumer source, or None when events are turned off."""
    return None
