"""Durable timers through the runtime, on every store: scheduled with the events that decided
them, delivered when due with a deterministic command id, claimed by one runtime at a time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from actorsource import (
    Cancel,
    ConcurrencyError,
    DefinitionError,
    EventApplyError,
    EventStore,
    InMemoryEventStore,
    Missed,
    NewEvent,
    RecordingMetrics,
    Runtime,
    Schedule,
    StoreCapabilities,
    StoreError,
    Timers,
    TimerSchedule,
)
from actorsource._decider import Decider
from actorsource.testing import FakeClock, given

from .timer_domain import (
    Break,
    Expire,
    Expired,
    Misdirect,
    Nudge,
    Order,
    Paid,
    Pay,
    Place,
    Placed,
    Shop,
    StartTicking,
    Tick,
    Ticked,
    TickLater,
)


@asynccontextmanager
async def running(store: EventStore, clock: FakeClock, **options: Any) -> AsyncIterator[Runtime]:
    async with Runtime(store, timers=Timers([Order, Shop], clock=clock, **options)) as runtime:
        yield runtime


async def types_in(store: EventStore, stream_id: str) -> list[str]:
    return [stored.type async for stored in store.read_stream(stream_id)]


async def test_a_scheduled_command_is_delivered_when_due_and_not_before(store: EventStore) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        await runtime.ref(Order, "1").ask(Place(minutes=15))
        clock.advance(minutes=14)
        assert await runtime.fire_due_timers() == 0
        assert await types_in(store, "Order-1") == ["Placed"]
        clock.advance(minutes=1)
        assert await runtime.fire_due_timers() == 1
        assert await types_in(store, "Order-1") == ["Placed", "Expired"]
    assert await store.capabilities().timers.list_timers() == []  # type: ignore[union-attr]


async def test_the_delivered_command_carries_the_timers_deterministic_command_id(
    store: EventStore,
) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        await runtime.ref(Order, "1").ask(Place(minutes=15))
        clock.advance(minutes=15)
        await runtime.fire_due_timers()
    expired = [e async for e in store.read_stream("Order-1")][-1]
    due = datetime(2030, 1, 1, 0, 15, tzinfo=UTC)
    micros = int((due - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
    assert expired.metadata["command_id"] == f"timer:Order-1:expiry:{micros}"


async def test_a_cancelled_timer_is_never_delivered(store: EventStore) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        order = runtime.ref(Order, "1")
        await order.ask(Place(minutes=15))
        await order.ask(Pay())
        clock.advance(hours=1)
        assert await runtime.fire_due_timers() == 0
        assert await types_in(store, "Order-1") == ["Placed", "Paid"]


async def test_a_schedule_with_the_same_key_replaces_the_earlier_one(store: EventStore) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        order = runtime.ref(Order, "1")
        await order.ask(TickLater(seconds=5))
        await order.ask(TickLater(seconds=60))
        clock.advance(seconds=30)
        assert await runtime.fire_due_timers() == 0
        clock.advance(seconds=30)
        assert await runtime.fire_due_timers() == 1
        assert await types_in(store, "Order-1") == ["Ticked"]


async def test_a_command_whose_events_fail_to_apply_schedules_nothing(store: EventStore) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        with pytest.raises(EventApplyError, match="Broken cannot be applied"):
            await runtime.ref(Order, "1").ask(Break())
        assert await store.capabilities().timers.list_timers() == []  # type: ignore[union-attr]
        assert await types_in(store, "Order-1") == []


async def test_a_command_refused_by_a_version_conflict_schedules_nothing(
    store: EventStore,
) -> None:
    timers = store.capabilities().timers
    assert timers is not None
    await store.append("Order-1", 0, [_event("Placed")])
    schedule = TimerSchedule(
        "Order-1", "k", "Order-1", "Tick", {}, datetime(2030, 1, 1, tzinfo=UTC), None, "once"
    )
    with pytest.raises(ConcurrencyError):
        await timers.append_with_timers("Order-1", 0, [_event("Placed")], [schedule])
    assert await timers.list_timers() == []
    assert await types_in(store, "Order-1") == ["Placed"]


async def test_a_timer_to_another_aggregate_is_delivered_there(store: EventStore) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        await runtime.ref(Order, "1").ask(Nudge("1"))
        clock.advance(seconds=5)
        assert await runtime.fire_due_timers() == 1
        assert (await runtime.ref(Shop, "s").state()).nudges == ["1"]


async def test_a_recurring_timer_delivers_each_missed_tick_with_missed_each(
    store: EventStore,
) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        await runtime.ref(Order, "1").ask(StartTicking(10, Missed.EACH.value))
        clock.advance(seconds=35)
        assert await runtime.fire_due_timers() == 3
        assert (await runtime.ref(Order, "1").state()).ticks == 3


async def test_a_recurring_timer_delivers_missed_ticks_once_with_missed_once(
    store: EventStore,
) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        await runtime.ref(Order, "1").ask(StartTicking(10, Missed.ONCE.value))
        clock.advance(seconds=35)
        assert await runtime.fire_due_timers() == 1
        (timer,) = await store.capabilities().timers.list_timers()  # type: ignore[union-attr]
        assert timer.due_at == clock.now().replace(second=40)  # the first tick after now
        clock.advance(seconds=5)
        assert await runtime.fire_due_timers() == 1
        assert (await runtime.ref(Order, "1").state()).ticks == 2


async def test_a_timer_due_while_nothing_ran_fires_on_the_next_start(store: EventStore) -> None:
    clock = FakeClock()
    async with Runtime(store) as runtime:  # schedules, but delivers nothing
        await runtime.ref(Order, "1").ask(Place(minutes=15))
    clock.advance(hours=2)
    async with running(store, clock) as runtime:
        await runtime.fire_due_timers()  # waits for the round the start began
        assert await types_in(store, "Order-1") == ["Placed", "Expired"]


async def test_the_runtime_delivers_due_timers_on_its_own(store: EventStore) -> None:
    clock = FakeClock()
    async with running(store, clock) as runtime:
        await runtime.ref(Order, "1").ask(Place(minutes=15))
        head = await store.head_position()
        clock.advance(minutes=15)
        with anyio.fail_after(10):
            await store.wait_for_events(head, timeout=10)
        assert await types_in(store, "Order-1") == ["Placed", "Expired"]


async def test_a_tick_delivered_by_a_claimer_that_died_takes_effect_once(
    store: EventStore,
) -> None:
    timers = store.capabilities().timers
    assert timers is not None
    clock = FakeClock()
    # a long poll: only the test's calls look for due timers once the first round is done
    async with running(store, clock, lease=30, poll_interval=3600) as runtime:
        await runtime.ref(Order, "1").ask(TickLater(seconds=5))
        clock.advance(seconds=5)
        # another runtime claimed the tick and delivered it, then died before marking it done
        (claimed,) = await timers.claim_due_timers("dead", clock.now(), 30, limit=10)
        await runtime.ref(Order, "1").ask(Tick(), command_id=claimed.command_id)
        assert await runtime.fire_due_timers() == 0  # its claim holds for the lease
        clock.advance(seconds=31)
        assert await runtime.fire_due_timers() == 1  # delivered again ...
        assert await types_in(store, "Order-1") == ["Ticked"]  # ... and taken once
        assert await timers.list_timers() == []


async def test_each_due_timer_is_claimed_by_one_claimant(store: EventStore) -> None:
    clock = FakeClock()
    async with Runtime(store) as runtime:
        for n in range(30):
            await runtime.ref(Order, str(n)).ask(TickLater(seconds=1))
    timers = store.capabilities().timers
    assert timers is not None
    clock.advance(seconds=1)
    claims: dict[str, list[str]] = {}

    async def claim(name: str) -> None:
        found = []
        while batch := await timers.claim_due_timers(name, clock.now(), 30, limit=4):
            found += [t.owner for t in batch]
        claims[name] = found

    async with anyio.create_task_group() as group:
        for name in ("a", "b", "c"):
            group.start_soon(claim, name)
    everything = [owner for found in claims.values() for owner in found]
    assert sorted(everything) == sorted(f"Order-{n}" for n in range(30))
    assert all(t.claimed_by in claims for t in await timers.list_timers())


async def test_a_finished_tick_does_not_drop_a_timer_scheduled_again_meanwhile(
    store: EventStore,
) -> None:
    timers = store.capabilities().timers
    assert timers is not None
    clock = FakeClock()
    async with running(store, clock, poll_interval=3600) as runtime:
        order = runtime.ref(Order, "1")
        await order.ask(TickLater(seconds=5))
        clock.advance(seconds=5)
        (claimed,) = await timers.claim_due_timers("slow", clock.now(), 30, limit=10)
        await order.ask(TickLater(seconds=60))  # replaced while claimed
        assert await timers.finish_timer(claimed, "slow", None) is False
        (left,) = await timers.list_timers()
        assert (left.due_at, left.claimed_by) == (clock.now() + timedelta(seconds=60), None)


async def test_claims_name_only_the_categories_asked_for(store: EventStore) -> None:
    timers = store.capabilities().timers
    assert timers is not None
    clock = FakeClock()
    async with Runtime(store, timers=Timers([Order], clock=clock)) as runtime:
        await runtime.ref(Order, "1").ask(Nudge("1"))  # goes to Shop-s
        await runtime.ref(Order, "2").ask(TickLater(seconds=5))
    clock.advance(seconds=5)
    claimed = await timers.claim_due_timers("x", clock.now(), 30, limit=10, categories=["Shop"])
    assert [t.target for t in claimed] == ["Shop-s"]
    assert await timers.claim_due_timers("x", clock.now(), 30, limit=10, categories=[]) == []


async def test_timer_metrics_count_due_and_late_timers(store: EventStore) -> None:
    clock = FakeClock()
    metrics = RecordingMetrics()
    async with Runtime(
        store, metrics=metrics, timers=Timers([Order], clock=clock, poll_interval=1)
    ) as runtime:
        await runtime.ref(Order, "1").ask(TickLater(seconds=5))
        await runtime.ref(Order, "2").ask(TickLater(seconds=60))
        clock.advance(seconds=5)
        await runtime.fire_due_timers()
        clock.advance(minutes=5)
        await runtime.fire_due_timers()
    assert metrics.total("actorsource.timers.due", category="Order") == 2
    assert metrics.total("actorsource.timers.late", category="Order") == 1


# -- what is refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Schedule(Tick(), key="", after=timedelta(1)), "key must be a non-empty str"),
        (lambda: Schedule(Tick(), key="k"), "give at= .*, after= .* or every="),
        (
            lambda: Schedule(Tick(), key="k", at=datetime(2030, 1, 1), after=timedelta(1)),
            "not both",
        ),
        (lambda: Schedule(Tick(), key="k", at=datetime(2030, 1, 1)), "aware datetime"),
        (lambda: Schedule(Tick(), key="k", after=timedelta(-1)), "timedelta >= 0"),
        (lambda: Schedule(Tick(), key="k", every=timedelta(0)), "timedelta > 0"),
        (lambda: Schedule(Tick(), key="k", after=timedelta(1), to=(Order,)), "to= must be"),  # type: ignore[arg-type]
        (lambda: Cancel(""), "key must be a non-empty str"),
    ],
)
def test_malformed_effects_are_refused_with_what_is_wrong(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make()


async def test_a_command_scheduled_to_an_aggregate_that_does_not_handle_it_is_refused(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        with pytest.raises(DefinitionError, match="Shop does not handle it"):
            await runtime.ref(Order, "1").ask(Misdirect())
        assert await store.capabilities().timers.list_timers() == []  # type: ignore[union-attr]


class _NoTimers(InMemoryEventStore):
    def capabilities(self) -> StoreCapabilities:
        return StoreCapabilities()


async def test_scheduling_on_a_store_without_timers_fails_the_command_and_stores_nothing() -> None:
    store = _NoTimers()
    async with Runtime(store) as runtime:
        with pytest.raises(StoreError, match="keeps no durable timers"):
            await runtime.ref(Order, "1").ask(Place())
        assert await types_in(store, "Order-1") == []


async def test_a_runtime_that_delivers_timers_needs_a_store_that_keeps_them() -> None:
    with pytest.raises(ValueError, match="needs a store that keeps durable timers"):
        Runtime(_NoTimers(), timers=Timers([Order]))


def test_timers_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="lease"):
        Timers([Order], lease=0)
    with pytest.raises(ValueError, match=r"Timers\(lease=...\) must be > 0 seconds"):
        Timers([Order], lease=float("inf"))
    with pytest.raises(ValueError, match=r"Timers\(max_claim=...\) must be an int >= 1"):
        Timers([Order], max_claim=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aggregates"):
        Timers("Order")  # type: ignore[arg-type]


async def test_fire_due_timers_needs_a_runtime_made_with_timers() -> None:
    async with Runtime(InMemoryEventStore()) as runtime:
        with pytest.raises(ValueError, match="delivers no timers"):
            await runtime.fire_due_timers()


def test_a_handler_without_effects_gets_a_plain_list() -> None:
    from actorsource._aggregate import decider_of

    decider: Decider[Any, Any, Order] = decider_of(Order)
    assert type(decider.decide_events(Tick(), Order())) is list
    assert type(decider.decide_events(Expire(), Order(placed=True))) is list
    assert [type(e) for e in decider.decide_events(Expire(), Order())] == [Expired]


def _event(kind: str) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), kind, {}, {})


# -- the test kit -------------------------------------------------------------------------------


def test_then_scheduled_checks_the_effects_a_handler_returned() -> None:
    given(Order).when(Place(minutes=15)).then(Placed()).then_scheduled(
        Schedule(Expire(), key="expiry", after=timedelta(minutes=15))
    )
    given(Order, Placed()).when(Pay()).then(Paid()).then_scheduled(Cancel("expiry"))
    given(Order).when(Tick()).then(Ticked()).then_scheduled()


def test_then_scheduled_shows_both_lists_when_they_differ() -> None:
    outcome = given(Order).when(Place(minutes=15))
    differ = r"other timer effects(.|\n)*seconds=300(.|\n)*seconds=900"
    with pytest.raises(AssertionError, match=differ):
        outcome.then_scheduled(Schedule(Expire(), key="expiry", after=timedelta(minutes=5)))
    with pytest.raises(AssertionError, match="other timer effects"):
        given(Order).when(Tick()).then_scheduled(Cancel("expiry"))


def test_the_kit_refuses_a_command_scheduled_where_it_is_not_handled() -> None:
    given(Order).when(Misdirect()).raises(DefinitionError, match="does not handle it")


def test_a_fake_clock_moves_only_forward_and_wakes_its_sleepers() -> None:
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    woken: list[datetime] = []

    async def sleeper() -> None:
        await clock.sleep_until(datetime(2030, 1, 1, 0, 10, tzinfo=UTC))
        woken.append(clock.now())

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(sleeper)
            await anyio.wait_all_tasks_blocked()
            clock.advance(minutes=9)
            await anyio.wait_all_tasks_blocked()
            assert woken == []
            clock.advance(timedelta(minutes=1))

    anyio.run(main)
    assert woken == [datetime(2030, 1, 1, 0, 10, tzinfo=UTC)]
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(seconds=-1)
    with pytest.raises(ValueError, match="aware start time"):
        FakeClock(datetime(2030, 1, 1))
