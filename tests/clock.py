"""A clock that moves only when a test moves it (for backoffs and other waits)."""

from __future__ import annotations


class ManualClock:
    """Seconds since an arbitrary start; :meth:`advance` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
