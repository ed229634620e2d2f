"""Command-line options with an environment-variable fallback, shown in --help."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are the one line that matters and a pointer to ``--help``
    (exit 2), not the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_option(
    parser: argparse.ArgumentParser | Any,
    *flags: str,
    env: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    help: str,
    action: str | None = None,
    env_parser: Callable[[str], Any] | None = None,
    **kwargs: Any,
) -> None:
    """Add ``flags`` whose default comes from ``env`` when that variable is set.

    Repeatable options (``action="append"``) read a comma-separated list from the variable, unless
    ``env_parser`` turns the variable's text into the value itself.
    A variable that does not parse is reported the way a bad flag is: one line, exit code 2.
    """
    raw = os.environ.get(env)
    value = default
    if raw is not None and raw != "":
        try:
            if env_parser is not None:
                value = env_parser(raw)
            elif action == "append":
                value = [type(part.strip()) for part in raw.split(",") if part.strip()]
            elif action == "store_true":
                value = raw.strip().lower() in {"1", "true", "yes", "on"}
            else:
                value = type(raw)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            message = f"environment variable {env}={raw!r}: {exc}"
            if hasattr(parser, "error"):
                parser.error(message)
            # an argument group has no error(); report the same way argparse does
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(2) from None
    suffix = f" [env {env}]"
    if action == "append":
        # argparse appends to the default list: give it a copy so the env list is replaced, not extended
        parser.add_argument(
            *flags,
            action=_ReplaceDefaultAppend,
            type=type,
            default=list(value or []),
            help=help + suffix,
            **kwargs,
        )
    elif action is not None:
        parser.add_argument(*flags, action=action, default=value, help=help + suffix, **kwargs)
    else:
        parser.add_argument(*flags, type=type, default=value, help=help + suffix, **kwargs)


class _ReplaceDefaultAppend(argparse.Action):
    """``append`` whose first use on the command line replaces the default (from the environment)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen = f"_{self.dest}_seen"
        current = getattr(namespace, self.dest) if getattr(namespace, seen, False) else []
        setattr(namespace, self.dest, [*current, values])
        setattr(namespace, seen, True)


#: the largest number an option takes: a finite bound, so no interval or count overflows a timer or a buffer
MAX_NUMBER = 1e9


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"expected a finite number no larger than {MAX_NUMBER:g}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_NUMBER:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (at most {MAX_NUMBER:g}), got {text!r}")
    return int(text)


def ratio(text: str) -> float:
    """A share from 0 up to (not including) 1."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a ratio from 0 up to (not including) 1, got {text!r}")
    return value


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[v6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 0.0.0.0:9808, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
