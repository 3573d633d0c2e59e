"""Storage growth: what a store committed, as totals and as rates over a sliding window."""

from __future__ import annotations

from typing import Any

import pytest

from actorsource import (
    ConcurrencyError,
    EventStore,
    GrowthMeter,
    Runtime,
)

from ..clock import ManualClock
from ..domain import Account, Deposit
from .test_contract import event

DAY = 86_400


def test_the_meter_gives_rates_over_its_window_and_totals_since_it_started() -> None:
    clock = ManualClock(1000.0)
    meter = GrowthMeter(60.0, buckets=6, clock=clock)  # slices of 10 s
    assert meter.growth().events_per_second == 0.0  # nothing measured yet, no division by 0
    meter.record(10, 1000)
    clock.advance(30)
    growth = meter.growth()
    assert (growth.events, growth.bytes, growth.window) == (10, 1000, 30.0)
    assert growth.events_per_second == pytest.approx(10 / 30)
    assert growth.bytes_per_day == pytest.approx(1000 / 30 * DAY)
    meter.record(5, 500)
    clock.advance(45)  # the first commit's slice left the window, the second's is in it
    growth = meter.growth()
    assert (growth.events, growth.bytes) == (15, 1500)
    assert growth.window == 55.0  # the window's whole slices up to now
    assert growth.events_per_second == pytest.approx(5 / 55)
    clock.advance(600)
    assert meter.growth().bytes_per_day == 0.0  # nothing recent: no growth


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"window": 0}, "window must be > 0"),
        ({"window": "60"}, "window must be > 0"),
        ({"buckets": 0}, "buckets must be an int >= 1"),
        ({"buckets": 2.5}, "buckets must be an int >= 1"),
    ],
)
def test_the_meter_refuses_bad_settings(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GrowthMeter(**arguments)


async def test_a_store_counts_the_events_and_bytes_it_committed(store: EventStore) -> None:
    clock = ManualClock()
    store.growth_meter = GrowthMeter(clock=clock)  # type: ignore[attr-defined]  # every store has one
    growth_of = store.capabilities().storage_growth
    assert growth_of is not None
    await store.append("Account-1", 0, [event(data={"a": 1}), event(data={"a": 2})])
    await store.append("Account-2", 0, [event(data={"b": 10})])
    with pytest.raises(ConcurrencyError):  # refused: nothing stored, nothing counted
        await store.append("Account-1", 0, [event(data={"a": 3})])
    clock.advance(10)
    growth = growth_of()
    # '{"a":1}' and '{}': 7 + 2 bytes; '{"b":10}' and '{}': 8 + 2
    assert (growth.events, growth.bytes) == (3, 28)
    assert growth.events_per_second == pytest.approx(3 / 10)
    assert growth.bytes_per_day == pytest.approx(28 / 10 * DAY)


async def test_statistics_and_health_report_the_storage_growth(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(1))
        storage = runtime.statistics().storage
        assert storage is not None and storage.events == 1 and storage.bytes > 0
        relaxed = await runtime.health()
        strict = await runtime.health(max_bytes_per_day=1.0)
    (check,) = [c for c in relaxed.checks if c.name == "storage"]
    assert check.ok and "events/s" in check.detail and "no limit" in check.detail
    assert relaxed.healthy
    (check,) = [c for c in strict.checks if c.name == "storage"]
    assert not check.ok and "limit 1" in check.detail
    assert not strict.healthy
