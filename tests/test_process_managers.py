"""Process managers: the order fulfilment saga's paths, the outbox in the instance's stream,
replays that send nothing again, a failing instance that holds up only itself, bad input."""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import attrs
import pytest

from actorsource import (
    Aggregate,
    CommandDecided,
    DefinitionError,
    EventStore,
    InMemoryEventStore,
    Outcome,
    ProcessManager,
    ProcessRouter,
    Rejected,
    Runtime,
    Send,
    Timers,
    apply,
    command,
    on_event,
    on_outcome,
)
from actorsource.testing import FakeClock, given
from examples.order_fulfilment import (
    ConfirmPayment,
    Fulfilment,
    FulfilmentStarted,
    Order,
    Payment,
    PaymentOverdue,
    PlaceOrder,
    Restock,
    StageReached,
    Warehouse,
)

AGGREGATES = [Order, Payment, Warehouse]


async def _types(store: EventStore, stream_id: str) -> list[str]:
    return [stored.type async for stored in store.read_stream(stream_id)]


async def _fulfil(runtime: Runtime, *orders: PlaceOrder, stock: int = 10) -> ProcessRouter:
    await runtime.ref(Warehouse, "main").ask(Restock("book", stock))
    for order in orders:
        await runtime.ref(Order, order.order_id).ask(order)
    router = ProcessRouter(runtime, [Fulfilment], aggregates=AGGREGATES)
    await router.run_until_idle()
    return router


async def test_a_paid_order_is_reserved_charged_and_shipped(store: EventStore) -> None:
    async with Runtime(store, timers=Timers([Fulfilment], clock=FakeClock())) as runtime:
        await _fulfil(runtime, PlaceOrder("1", "book", 2, 2500, "ok"))
        assert (await runtime.ref(Fulfilment, "1").state()).result == "shipped"
        assert await _types(store, "Order-1") == ["OrderPlaced", "OrderShipped"]
        assert await _types(store, "Payment-1") == ["PaymentCharged"]
        assert (await runtime.ref(Warehouse, "main").state()).stock == {"book": 8}
        timers = store.capabilities().timers
        assert timers is not None
        assert await timers.list_timers() == []  # the payment timeout was cancelled


async def test_a_refused_payment_releases_the_stock_and_cancels_the_order(
    store: EventStore,
) -> None:
    async with Runtime(store, timers=Timers([Fulfilment], clock=FakeClock())) as runtime:
        await _fulfil(runtime, PlaceOrder("1", "book", 2, 2500, "declined"))
        state = await runtime.ref(Fulfilment, "1").state()
        assert state.result == "cancelled: payment refused: the card was declined"
        assert await _types(store, "Order-1") == ["OrderPlaced", "OrderCancelled"]
        warehouse = await _types(store, "Warehouse-main")
        assert warehouse == ["Restocked", "StockReserved", "StockReleased"]
        assert (await runtime.ref(Warehouse, "main").state()).stock == {"book": 10}


async def test_an_order_out_of_stock_is_cancelled_without_charging(store: EventStore) -> None:
    async with Runtime(store, timers=Timers([Fulfilment], clock=FakeClock())) as runtime:
        await _fulfil(runtime, PlaceOrder("1", "book", 5, 2500, "ok"), stock=3)
        state = await runtime.ref(Fulfilment, "1").state()
        assert state.result == "cancelled: out of stock: book"
        assert await _types(store, "Payment-1") == []
        assert await _types(store, "Order-1") == ["OrderPlaced", "OrderCancelled"]


async def test_an_order_unpaid_after_15_minutes_is_cancelled_and_its_stock_released(
    store: EventStore,
) -> None:
    clock = FakeClock()
    async with Runtime(store, timers=Timers([Fulfilment], clock=clock)) as runtime:
        router = await _fulfil(runtime, PlaceOrder("1", "book", 2, 2500, "3ds"))
        assert (await runtime.ref(Fulfilment, "1").state()).stage == "paying"
        clock.advance(minutes=14)
        assert await runtime.fire_due_timers() == 0
        clock.advance(minutes=1)
        assert await runtime.fire_due_timers() == 1
        await router.run_until_idle()
        state = await runtime.ref(Fulfilment, "1").state()
        assert state.result == "cancelled: unpaid after the payment timeout"
        assert await _types(store, "Payment-1") == ["PaymentRequested", "PaymentCancelled"]
        assert (await runtime.ref(Warehouse, "main").state()).stock == {"book": 10}
        # a confirmation that comes too late is refused by the payment
        with pytest.raises(Exception, match="cannot confirm a payment that is cancelled"):
            await runtime.ref(Payment, "1").ask(ConfirmPayment())


async def test_an_order_paid_before_the_timeout_ships_and_the_timeout_is_dropped(
    store: EventStore,
) -> None:
    clock = FakeClock()
    async with Runtime(store, timers=Timers([Fulfilment], clock=clock)) as runtime:
        router = await _fulfil(runtime, PlaceOrder("1", "book", 2, 2500, "3ds"))
        clock.advance(minutes=10)
        await runtime.ref(Payment, "1").ask(ConfirmPayment())
        await router.run_until_idle()
        clock.advance(minutes=10)
        assert await runtime.fire_due_timers() == 0
        assert (await runtime.ref(Fulfilment, "1").state()).result == "shipped"


async def test_each_command_is_recorded_in_the_instance_stream_before_it_is_sent(
    store: EventStore,
) -> None:
    async with Runtime(store, timers=Timers([Fulfilment], clock=FakeClock())) as runtime:
        await _fulfil(runtime, PlaceOrder("1", "book", 2, 2500, "ok"))
        saga = [stored async for stored in store.read_stream("Fulfilment-1")]
        decided = [stored for stored in saga if stored.type == "CommandDecided"]
        assert [stored.data["command_type"] for stored in decided] == [
            "ReserveStock",
            "ChargePayment",
            "ShipOrder",
        ]
        async for stored in store.read_all():
            command_id = stored.metadata.get("command_id", "")
            if command_id.startswith("process:Fulfilment-1:"):
                version = int(command_id.rsplit(":", 1)[1])
                recorded = next(d for d in decided if d.version == version)
                assert recorded.position < stored.position  # recorded, then sent
        assert all(
            any(o.type == "OutcomeReceived" and o.data["seq"] == d.data["seq"] for o in saga)
            for d in decided
        )


async def test_routing_the_log_again_from_the_start_sends_nothing_twice(
    store: EventStore,
) -> None:
    async with Runtime(store, timers=Timers([Fulfilment], clock=FakeClock())) as runtime:
        orders = [PlaceOrder(str(n), "book", 1, 100, ("ok", "declined")[n % 2]) for n in range(4)]
        await _fulfil(runtime, *orders)
        head = await store.head_position()
        await store.save_checkpoint("process-router", 0)  # as after a lost checkpoint
        await ProcessRouter(runtime, [Fulfilment], aggregates=AGGREGATES).run_until_idle()
        assert await store.head_position() == head
        assert await store.load_checkpoint("process-router") == head


async def test_a_refused_command_is_not_sent_again_when_the_log_is_read_again(
    store: EventStore,
) -> None:
    async with Runtime(store, timers=Timers([Fulfilment], clock=FakeClock())) as runtime:
        await _fulfil(runtime, PlaceOrder("1", "book", 5, 2500, "ok"), stock=3)
        await runtime.ref(Warehouse, "main").ask(Restock("book", 10))  # it would succeed now
        await store.save_checkpoint("process-router", 0)
        await ProcessRouter(runtime, [Fulfilment], aggregates=AGGREGATES).run_until_idle()
        assert await _types(store, "Warehouse-main") == ["Restocked", "Restocked"]
        assert await _types(store, "Order-1") == ["OrderPlaced", "OrderCancelled"]


async def test_an_instance_ignores_an_event_it_handled_even_under_another_command_id(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Relay, "1")
        await ref.ask(_handle(Pinged("1")), command_id="first")
        before = await _types(store, "Relay-1")
        await ref.ask(_handle(Pinged("1")), command_id="second")
        assert await _types(store, "Relay-1") == before == ["CommandDecided", "EventHandled"]


async def test_a_command_recorded_but_not_sent_before_a_crash_is_sent_on_restart() -> None:
    store = InMemoryEventStore()
    async with Runtime(store, timers=Timers([Fulfilment], clock=FakeClock())) as runtime:
        await runtime.ref(Warehouse, "main").ask(Restock("book", 10))
        await runtime.ref(Order, "1").ask(PlaceOrder("1", "book", 2, 2500, "ok"))
        # a router that dies while the warehouse is down: the reservation is recorded, unsent
        broken = ProcessRouter(runtime, [Fulfilment], aggregates=[Order, Payment])
        with anyio.move_on_after(0.5):  # it retries forever; this is its crash
            await broken.run_until_idle()
        assert "CommandDecided" in await _types(store, "Fulfilment-1")
        assert await _types(store, "Warehouse-main") == ["Restocked"]
        assert await store.load_checkpoint("process-router") == 0
        await ProcessRouter(runtime, [Fulfilment], aggregates=AGGREGATES).run_until_idle()
        assert (await runtime.ref(Fulfilment, "1").state()).result == "shipped"
        assert (await _types(store, "Warehouse-main")).count("StockReserved") == 1


def test_a_decision_is_tested_with_the_kit_its_sends_as_recorded_commands() -> None:
    given(Fulfilment, FulfilmentStarted("1", 2500, "3ds"), StageReached("paying")).when(
        PaymentOverdue()
    ).then(StageReached("cancelling-payment"), CommandDecided(1, "Payment-1", "CancelPayment", {}))
    given(Fulfilment, FulfilmentStarted("1", 2500, "3ds"), StageReached("shipping")).when(
        PaymentOverdue()
    ).then()


# -- a failing instance holds up only itself


@attrs.frozen
class Ping:
    to: str


@attrs.frozen
class Pinged:
    to: str


@attrs.frozen
class Poke:
    pass


@attrs.frozen
class Poked:
    pass


@attrs.define
class Target(Aggregate):
    @command
    def poke(self, cmd: Poke) -> Poked:
        return Poked()

    @apply
    def poked(self, event: Poked) -> None:
        pass


@attrs.define
class Source(Aggregate):
    @command
    def ping(self, cmd: Ping) -> Pinged:
        return Pinged(cmd.to)

    @apply
    def pinged(self, event: Pinged) -> None:
        pass


@attrs.define
class Relay(ProcessManager):
    done: bool = False

    @on_event(key=lambda event: event.to)
    def pinged(self, event: Pinged) -> Send:
        if event.to == "broken":
            raise RuntimeError("a bug in this instance")
        return Send(Poke(), to=(Target, event.to))

    @on_outcome
    def poked(self, outcome: Outcome, command: Poke) -> Relayed:
        return Relayed()

    @apply
    def relayed(self, event: Relayed) -> None:
        self.done = True


@attrs.frozen
class Relayed:
    pass


async def test_a_failing_instance_does_not_block_the_others(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Source, "s").ask(Ping("broken"))
        for n in range(3):
            await runtime.ref(Source, "s").ask(Ping(str(n)))
        async with ProcessRouter(runtime, [Relay], aggregates=[Target], poll_interval=0.01):
            with anyio.fail_after(10):
                for n in range(3):
                    while not (await runtime.ref(Relay, str(n)).state()).done:
                        await store.wait_for_events(await store.head_position(), 0.05)
        assert await _types(store, "Relay-broken") == []
        # the checkpoint stays before the event the broken instance has not handled
        assert await store.load_checkpoint("process-router") == 0


@attrs.define
class Picky(ProcessManager):
    """Refuses every outcome of its pokes."""

    @on_event(key=lambda event: event.to)
    def pinged(self, event: Pinged) -> Send:
        return Send(Poke(), to=(Target, event.to))

    @on_outcome
    def poked(self, outcome: Outcome, command: Poke) -> None:
        raise Rejected("not interested any more")


async def test_an_outcome_its_handler_refuses_is_recorded_and_logged_not_retried(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actorsource.processes")
    async with Runtime(store) as runtime:
        await runtime.ref(Source, "s").ask(Ping("p"))
        router = ProcessRouter(runtime, [Picky], aggregates=[Target], poll_interval=0.01)
        with anyio.fail_after(10):  # it was retried for ever
            await router.run_until_idle()
        assert (await runtime.ref(Picky, "p").state()).outbox == {}
    assert await _types(store, "Picky-p") == ["CommandDecided", "EventHandled", "OutcomeReceived"]
    assert await _types(store, "Target-p") == ["Poked"]
    refused = [r for r in caplog.records if "refused the outcome" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.INFO]
    assert "Picky refused the outcome of its Poke to Target-p: not interested" in (
        refused[0].getMessage()
    )


# -- bad input


def test_send_with_a_malformed_target_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Send\(to=\.\.\.\) takes"):
        Send(Poke(), to=(Target, ""))  # type: ignore[arg-type]


async def test_sending_a_command_its_target_does_not_handle_is_refused_and_stores_nothing(
    store: EventStore,
) -> None:
    @attrs.define
    class Misdirected(ProcessManager):
        @on_event(key=lambda event: event.to)
        def pinged(self, event: Pinged) -> Send:
            return Send(Ping("x"), to=(Target, "1"))

    async with Runtime(store) as runtime:
        router = ProcessRouter(runtime, [Misdirected])
        with pytest.raises(DefinitionError, match="does not handle that command"):
            await runtime.ref(Misdirected, "1").ask(_handle(Pinged("1")))
        del router
        assert await _types(store, "Misdirected-1") == []


def _handle(event: object) -> Any:
    from actorsource._process_manager import HandleEvent

    return HandleEvent(event, 1, type(event).__name__)


@pytest.mark.parametrize("limit", [0, -1.0, "5", math.inf])
async def test_a_router_s_bad_retry_limit_is_refused_naming_it(limit: object) -> None:
    async with Runtime(InMemoryEventStore()) as runtime:
        with pytest.raises(ValueError, match="retry_limit must be > 0 seconds"):
            ProcessRouter(runtime, [Relay], aggregates=[Target], retry_limit=limit)  # type: ignore[arg-type]


async def test_a_router_needs_process_manager_classes() -> None:
    async with Runtime(InMemoryEventStore()) as runtime:
        with pytest.raises(ValueError, match="at least one"):
            ProcessRouter(runtime, [])
        with pytest.raises(TypeError, match="ProcessManager subclasses"):
            ProcessRouter(runtime, [Target])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="poll_interval"):
            ProcessRouter(runtime, [Relay], poll_interval=0)
