"""Label values kept bounded, so no input can grow the series count without limit."""

from __future__ import annotations

OTHER = "other"


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
