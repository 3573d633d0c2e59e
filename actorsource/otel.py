"""OpenTelemetry metrics for actorsource (``pip install 'actorsource[otel]'``).

::

    from actorsource.otel import OpenTelemetryMetrics

    metrics = OpenTelemetryMetrics()              # the global MeterProvider, or pass one
    async with Runtime(store, metrics=metrics) as runtime:
        metrics.observe(runtime)                  # gauges: actors, mailboxes, projection lag

Counters and histograms are those of :mod:`actorsource._metrics` (durations in seconds). The
gauges read ``runtime.statistics()`` when the SDK collects: ``actorsource.actors.active``,
``actorsource.mailbox.depth``, ``actorsource.projection.lag`` (events, by ``projection``) and
``actorsource.projection.lag.seconds``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, MeterProvider, Observation

from . import __version__
from ._metrics import Attributes

if TYPE_CHECKING:
    from ._runtime import Runtime


class OpenTelemetryMetrics:
    """A :class:`~actorsource.Metrics` that reports to an OpenTelemetry ``MeterProvider``.

    :param meter_provider: where to report (default: the global one)
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider or otel_metrics.get_meter_provider()
        self._meter = provider.get_meter("actorsource", __version__)
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._runtimes: list[weakref.ref[Runtime]] = []
        self._gauges_made = False

    def add(self, name: str, amount: int, attributes: Attributes) -> None:
        """Add to the counter ``name`` (made on first use)."""
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = self._meter.create_counter(name)
        counter.add(amount, dict(attributes))

    def record(self, name: str, value: float, attributes: Attributes) -> None:
        """Record a value of the histogram ``name`` (made on first use; ``.duration`` in s)."""
        histogram = self._histograms.get(name)
        if histogram is None:
            unit = "s" if name.endswith(".duration") else "1"
            histogram = self._histograms[name] = self._meter.create_histogram(name, unit=unit)
        histogram.record(value, dict(attributes))

    def observe(self, runtime: Runtime) -> None:
        """Report ``runtime``'s gauges (active actors, mailbox depth, projection lag)."""
        self._runtimes.append(weakref.ref(runtime))
        if self._gauges_made:
            return
        self._gauges_made = True
        meter = self._meter
        meter.create_observable_gauge(
            "actorsource.actors.active", [self._active], description="actors holding state"
        )
        meter.create_observable_gauge(
            "actorsource.mailbox.depth", [self._queued], description="messages waiting"
        )
        meter.create_observable_gauge(
            "actorsource.projection.lag", [self._lag], description="events not yet handled"
        )
        meter.create_observable_gauge(
            "actorsource.projection.lag.seconds",
            [self._lag_seconds],
            unit="s",
            description="age of the oldest event not yet handled",
        )

    def _statistics(self) -> list[Any]:
        alive = [r() for r in self._runtimes]
        return [runtime.statistics() for runtime in alive if runtime is not None]

    def _active(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(sum(s.active_actors for s in self._statistics()))]

    def _queued(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(sum(s.queued_messages for s in self._statistics()))]

    def _lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(p.lag_events, {"projection": p.name})
            for s in self._statistics()
            for p in s.projections
        ]

    def _lag_seconds(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(p.lag_seconds, {"projection": p.name})
            for s in self._statistics()
            for p in s.projections
        ]
