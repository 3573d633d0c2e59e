"""Metrics hooks: one small interface the runtime reports to, and a recorder for tests.

The runtime calls :class:`Metrics` (``Runtime(metrics=...)``) as things happen; gauges (active
actors, mailbox depth, projection lag) are read from ``Runtime.statistics()`` by whoever
exports them (see :mod:`actorsource.otel`). Without ``metrics`` the runtime does no metrics
work at all.

Instruments (all names start with ``actorsource.``; attributes in braces):

=====================================  ==========  ==================================
name                                   kind        attributes
=====================================  ==========  ==================================
``actorsource.events.appended``        counter     ``category``, ``event_type``
``actorsource.commands``               counter     ``category``, ``outcome``
``actorsource.ask.duration``           histogram   ``category`` (seconds)
``actorsource.stream.length``          histogram   ``category`` (version after an append)
``actorsource.replay.duration``        histogram   ``category`` (seconds per activation)
``actorsource.replay.events``          histogram   ``category`` (events per activation)
``actorsource.activations``            counter     ``category``
``actorsource.passivations``           counter     ``category``
``actorsource.conflicts.retried``      counter     ``category``
``actorsource.projection.events``      counter     ``projection``
``actorsource.projection.duration``    histogram   ``projection`` (seconds per batch)
``actorsource.timers.due``             counter     ``category`` (timers claimed when due)
``actorsource.timers.late``            counter     ``category`` (claimed over a poll late)
``actorsource.timers.lateness``        histogram   ``category`` (seconds past due at claim)
=====================================  ==========  ==================================

``outcome`` is ``accepted`` (events stored or nothing to change), ``rejected`` (the command
handler refused it) or ``failed`` (anything else: an applier, the codec, the store).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs

EVENTS_APPENDED = "actorsource.events.appended"
COMMANDS = "actorsource.commands"
ASK_DURATION = "actorsource.ask.duration"
STREAM_LENGTH = "actorsource.stream.length"
REPLAY_DURATION = "actorsource.replay.duration"
REPLAY_EVENTS = "actorsource.replay.events"
ACTIVATIONS = "actorsource.activations"
PASSIVATIONS = "actorsource.passivations"
CONFLICTS_RETRIED = "actorsource.conflicts.retried"
PROJECTION_EVENTS = "actorsource.projection.events"
PROJECTION_DURATION = "actorsource.projection.duration"
TIMERS_DUE = "actorsource.timers.due"
TIMERS_LATE = "actorsource.timers.late"
TIMER_LATENESS = "actorsource.timers.lateness"

Attributes = Mapping[str, str]


@runtime_checkable
class Metrics(Protocol):
    """What the runtime reports to: counters and histograms, by name and attributes.

    Calls come from the event loop's thread, except for inline and exactly-once projections on
    SQLite, whose counts come from the store's writer thread: implementations must be cheap and
    must not block.
    """

    def add(self, name: str, amount: int, attributes: Attributes) -> None:
        """Add ``amount`` to the counter ``name``."""
        ...

    def record(self, name: str, value: float, attributes: Attributes) -> None:
        """Record one value of the histogram ``name``."""
        ...


@attrs.define
class RecordingMetrics:
    """A :class:`Metrics` that keeps everything in memory: for tests and quick looks."""

    #: counter totals by (name, sorted attribute items)
    counters: defaultdict[tuple[str, tuple[tuple[str, str], ...]], int] = attrs.Factory(
        lambda: defaultdict(int)
    )
    #: histogram values by (name, sorted attribute items), in the order recorded
    histograms: defaultdict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = attrs.Factory(
        lambda: defaultdict(list)
    )

    def add(self, name: str, amount: int, attributes: Attributes) -> None:
        """Add to a counter."""
        self.counters[(name, tuple(sorted(attributes.items())))] += amount

    def record(self, name: str, value: float, attributes: Attributes) -> None:
        """Record a histogram value."""
        self.histograms[(name, tuple(sorted(attributes.items())))].append(value)

    def total(self, name: str, **attributes: str) -> int:
        """Return a counter's total over every series whose attributes include ``attributes``."""
        wanted = set(attributes.items())
        return sum(
            value
            for (found, items), value in self.counters.items()
            if found == name and wanted <= set(items)
        )

    def values(self, name: str, **attributes: str) -> list[float]:
        """Return a histogram's values over every series whose attributes include these."""
        wanted = set(attributes.items())
        return [
            value
            for (found, items), values in self.histograms.items()
            if found == name and wanted <= set(items)
            for value in values
        ]
