"""How fast a store grows: events and stored bytes over a sliding window of recent commits."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import attrs

#: seconds in a day, for the daily rate
_DAY: Final = 86_400.0


@attrs.frozen(slots=True)
class StorageGrowth:
    """How fast a store grows, as measured by one store object over a recent window.

    Counts what this store object committed (other processes writing to the same database are
    not seen). Bytes are those of the stored event rows' data and metadata: JSON text (one
    per character) or, for compressed rows, the compressed bytes; indexes, snapshots and the
    database's own overhead are not counted.
    """

    #: events committed since the store was made
    events: int
    #: bytes of event data and metadata stored since the store was made
    bytes: int
    #: events committed per second over the window
    events_per_second: float
    #: bytes stored per day at the window's rate
    bytes_per_day: float
    #: the seconds the rates are measured over: the window, or less if the store is younger
    window: float


class GrowthMeter:
    """Counts a store's commits in buckets over a sliding window (thread-safe: the SQLite
    store records on its writer's thread).

    :param window: the seconds the rates are measured over
    :param buckets: how many slices the window is kept in (a commit leaves the window with its
        slice, so the window slides in steps of ``window / buckets``)
    :param clock: the clock (seconds; tests pass one they move by hand)
    """

    def __init__(
        self,
        window: float = 300.0,
        *,
        buckets: int = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(window, int | float) or isinstance(window, bool) or not window > 0:
            msg = f"GrowthMeter: window must be > 0 seconds, got {window!r}"
            raise ValueError(msg)
        if not isinstance(buckets, int) or isinstance(buckets, bool) or buckets < 1:
            msg = f"GrowthMeter: buckets must be an int >= 1, got {buckets!r}"
            raise ValueError(msg)
        self.window = float(window)
        self.clock = clock
        self._width = self.window / buckets
        self._buckets = buckets
        self._started = clock()
        self._lock = threading.Lock()
        #: [slice number, events, bytes], oldest first
        self._slices: deque[list[int]] = deque()
        self._events = 0
        self._bytes = 0

    def record(self, events: int, size: int) -> None:
        """Count a commit of ``events`` events holding ``size`` bytes."""
        index = int(self.clock() // self._width)
        with self._lock:
            self._events += events
            self._bytes += size
            slices = self._slices
            if slices and slices[-1][0] == index:
                last = slices[-1]
                last[1] += events
                last[2] += size
            else:
                slices.append([index, events, size])
                if len(slices) > self._buckets:
                    slices.popleft()

    def growth(self) -> StorageGrowth:
        """Return the totals and the rates over the window up to now."""
        now = self.clock()
        oldest = int(now // self._width) - self._buckets + 1  # the window's first slice
        with self._lock:
            recent = [s for s in self._slices if s[0] >= oldest]
            total_events, total_bytes = self._events, self._bytes
        # the window is whole slices up to now, or since the meter started if that is later
        span = min(now - oldest * self._width, now - self._started)
        if span <= 0:
            return StorageGrowth(total_events, total_bytes, 0.0, 0.0, 0.0)
        events = sum(s[1] for s in recent)
        size = sum(s[2] for s in recent)
        return StorageGrowth(total_events, total_bytes, events / span, size / span * _DAY, span)
