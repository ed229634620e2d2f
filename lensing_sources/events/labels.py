"""Bounded label values and the analysis-task filter."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from lensing_core.labels import OTHER, LabelCap

__all__ = ["OTHER", "UNKNOWN", "LabelCap", "TaskMatcher"]

UNKNOWN = "unknown"


class TaskMatcher:
    """Which task names count as analyses: shell-style globs, matched case-sensitively; none = every task."""

    _CACHE_LIMIT = 10_000

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self._cache: dict[str | None, bool] = {}

    def __call__(self, name: str | None) -> bool:
        if not self.patterns:
            return True
        hit = self._cache.get(name)
        if hit is None:
            hit = name is not None and any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[name] = hit
        return hit
