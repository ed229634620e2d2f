"""Bounded label values and the analysis-task filter."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

OTHER = "other"
UNKNOWN = "unknown"


class LabelCap:
    """Hands out at most ``limit`` distinct label values; every later newcomer becomes ``"other"``.

    First come, first kept: a counter series once exported keeps its label value for the life of the process.
    """

    def __init__(self, limit: int, other: str = OTHER) -> None:
        self.limit = limit
        self.other = other
        self._kept: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._kept:
            return value
        if len(self._kept) < self.limit:
            self._kept.add(value)
            return value
        return self.other

    def __len__(self) -> int:
        return len(self._kept)


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
