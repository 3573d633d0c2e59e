"""Metrics: what the runtime reports through Metrics, and the OpenTelemetry adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from actorsource import EventStore, RecordingMetrics, Rejected, Runtime, SQLiteEventStore
from actorsource.otel import OpenTelemetryMetrics

from .domain import Account, Deposit, Withdraw
from .test_projections import DepositsOnly


async def test_commands_events_and_ask_latency_are_counted(store: EventStore) -> None:
    metrics = RecordingMetrics()
    async with Runtime(store, metrics=metrics) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(5))
        await ref.ask(Deposit(1))
        await ref.ask(Withdraw(2))
        with pytest.raises(Rejected):
            await ref.ask(Withdraw(100))

    assert metrics.total("actorsource.commands", outcome="accepted") == 3
    assert metrics.total("actorsource.commands", outcome="rejected", category="Account") == 1
    assert metrics.total("actorsource.events.appended", event_type="Deposited") == 2
    assert metrics.total("actorsource.events.appended", event_type="Withdrew") == 1
    assert metrics.values("actorsource.stream.length") == [1, 2, 3]
    latencies = metrics.values("actorsource.ask.duration", category="Account")
    assert len(latencies) == 4
    assert all(latency > 0 for latency in latencies)


async def test_activations_replays_and_passivations_are_counted(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        for amount in (1, 2, 3):
            await runtime.ref(Account, "a").ask(Deposit(amount))

    metrics = RecordingMetrics()
    async with Runtime(store, metrics=metrics) as runtime:
        await runtime.ref(Account, "a").state()
        runtime.passivate_idle()
        await runtime.ref(Account, "a").state()

    assert metrics.total("actorsource.activations", category="Account") == 2
    assert metrics.values("actorsource.replay.events") == [3, 3]
    assert len(metrics.values("actorsource.replay.duration")) == 2
    assert metrics.total("actorsource.passivations") >= 1


async def test_conflicts_retried_are_counted(tmp_path: Path) -> None:
    metrics = RecordingMetrics()
    path = tmp_path / "events.db"
    async with (
        Runtime(SQLiteEventStore(path), metrics=metrics) as first,
        Runtime(SQLiteEventStore(path)) as second,
    ):
        await first.ref(Account, "a").ask(Deposit(1))  # first holds version 1 in memory
        await second.ref(Account, "a").ask(Deposit(1))  # the stream moves on behind it
        await first.ref(Account, "a").ask(Deposit(1))  # conflict: reload, decide again

    assert metrics.total("actorsource.conflicts.retried", category="Account") == 1


async def test_projection_events_and_batch_durations_are_counted(store: EventStore) -> None:
    metrics = RecordingMetrics()
    async with Runtime(store, metrics=metrics) as runtime:
        runtime.add_projection(DepositsOnly(), batch_size=2)
        for amount in (1, 2, 3):
            await runtime.ref(Account, "a").ask(Deposit(amount))
        await runtime.wait_for_projection(DepositsOnly)

    assert metrics.total("actorsource.projection.events", projection="DepositsOnly") == 3
    assert metrics.values("actorsource.projection.duration")


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


async def test_opentelemetry_adapter_exports_counters_histograms_and_gauges(
    store: EventStore,
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = OpenTelemetryMetrics(provider)
    async with Runtime(store, metrics=metrics) as runtime:
        metrics.observe(runtime)
        runtime.add_projection(DepositsOnly())
        await runtime.ref(Account, "a").ask(Deposit(2))
        await runtime.ref(Account, "b").ask(Deposit(3))
        await runtime.wait_for_projection(DepositsOnly)

        points = _points(reader)

    (appended,) = points["actorsource.events.appended"]
    assert appended.value == 2
    assert dict(appended.attributes) == {"category": "Account", "event_type": "Deposited"}
    (asks,) = points["actorsource.ask.duration"]
    assert asks.count == 2
    (active,) = points["actorsource.actors.active"]
    assert active.value == 2
    (lag,) = points["actorsource.projection.lag"]
    assert (lag.value, dict(lag.attributes)) == (0, {"projection": "DepositsOnly"})
    assert "actorsource.mailbox.depth" in points
    assert "actorsource.projection.lag.seconds" in points
    provider.shutdown()
