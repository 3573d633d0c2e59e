"""What a workload costs the event loop: how late a periodic timer fires (the loop's lag), and
the CPU time the loop's thread spends per command."""

from __future__ import annotations

import asyncio
import time

from ._common import Result, percentile

#: how often the lag probe's timer is due, in seconds
LAG_INTERVAL = 0.001


class LoopProbe:
    """A timer due every :data:`LAG_INTERVAL` on the running loop, and the loop thread's CPU clock.

    Call :meth:`start` and :meth:`stop` on the loop's thread around each measured stretch (a
    workload may have several: its rounds alternate with baselines that must not count).
    """

    def __init__(self, interval: float = LAG_INTERVAL) -> None:
        self.interval = interval
        #: how late each firing was, in seconds
        self.lags: list[float] = []
        #: the loop thread's CPU time over the measured stretches, in seconds
        self.cpu_seconds = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu_started = 0.0

    def start(self, *, lag: bool = True) -> None:
        """Start a measured stretch (from a coroutine on the loop to measure).

        :param lag: run the lag timer too; a stretch whose speed is measured leaves it off
            when the loop would otherwise sleep between commands (one caller): each firing
            then wakes the loop, and costs the commands around it their speed
        """
        loop = self._loop = asyncio.get_running_loop()
        if lag:
            self._due = loop.time() + self.interval
            self._handle = loop.call_at(self._due, self._fired)
        self._cpu_started = time.thread_time()

    def stop(self, *, cpu: bool = True) -> None:
        """End a measured stretch.

        :param cpu: count its CPU time (False: a stretch run for the lag only)
        """
        if cpu:
            self.cpu_seconds += time.thread_time() - self._cpu_started
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fired(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        # the loop may run a timer up to its clock resolution early: that is no lag
        self.lags.append(max(0.0, now - self._due))
        self._due = now + self.interval
        self._handle = self._loop.call_at(self._due, self._fired)

    def summary(self, commands: int) -> Result:
        """The lag's p99 and max in ms, and the loop's CPU per command in µs."""
        lags = sorted(self.lags)
        return {
            "loop_cpu_us_per_command": self.cpu_seconds / max(commands, 1) * 1e6,
            "loop_lag_p99_ms": percentile(lags, 0.99) * 1000,
            "loop_lag_max_ms": (lags[-1] if lags else 0.0) * 1000,
            "loop_lag_samples": len(lags),
        }
