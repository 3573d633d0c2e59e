"""The example aggregates' rules, tested the way users test theirs: with actorsource.testing.

The examples are programs, not a package: they are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from actorsource import Rejected, Runtime, SQLiteEventStore
from actorsource.testing import given, runtime

ROOT = Path(__file__).resolve().parent.parent


def _load_example(name: str) -> ModuleType:
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so that annotations resolve through the module's name
    spec.loader.exec_module(module)
    return module


order = _load_example("order_lifecycle")
inventory = _load_example("inventory")

LINES = (order.OrderLine("book", 2, 1500), order.OrderLine("lamp", 1, 1200))
PLACED = order.OrderPlaced("ada", LINES, 4200)


# -- the order's lifecycle ---------------------------------------------------------------------


def test_placing_an_order_totals_its_lines() -> None:
    given(order.Order).when(order.PlaceOrder("ada", LINES)).then(PLACED).then_state(
        order.Order(status=order.Status.PLACED, total=4200)
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "at least one line"),
        ((order.OrderLine("book", 0, 1500),), "quantity of book must be positive, got 0"),
        ((order.OrderLine("book", 1, -1),), "price of book must not be negative"),
    ],
)
def test_an_order_with_a_bad_line_is_refused(lines: tuple[object, ...], message: str) -> None:
    given(order.Order).when(order.PlaceOrder("ada", lines)).raises(Rejected, match=message)


def test_an_order_is_placed_once() -> None:
    given(order.Order, PLACED).when(order.PlaceOrder("ada", LINES)).raises(
        Rejected, match="already placed"
    )


def test_payment_must_match_the_total() -> None:
    given(order.Order, PLACED).when(order.Pay(4200)).then(order.OrderPaid(4200))
    given(order.Order, PLACED).when(order.Pay(4000)).raises(
        Rejected, match="payment of 4000 does not match the order total 4200"
    )


def test_an_order_cannot_be_paid_twice_nor_before_it_is_placed() -> None:
    paid = given(order.Order, PLACED, order.OrderPaid(4200))
    paid.when(order.Pay(4200)).raises(Rejected, match="already paid")
    given(order.Order).when(order.Pay(4200)).raises(Rejected, match="not placed")


def test_an_unpaid_order_cannot_ship() -> None:
    given(order.Order, PLACED).when(order.Ship("1Z")).raises(Rejected, match="unpaid")
    given(order.Order).when(order.Ship("1Z")).raises(Rejected, match="unpaid")


def test_a_paid_order_ships_once() -> None:
    paid = given(order.Order, PLACED, order.OrderPaid(4200))
    paid.when(order.Ship("1Z")).then(order.OrderShipped("1Z"))
    paid.when(order.Ship("")).raises(Rejected, match="tracking number")
    shipped = given(order.Order, PLACED, order.OrderPaid(4200), order.OrderShipped("1Z"))
    shipped.when(order.Ship("2Z")).raises(Rejected, match=r"already shipped \(tracking 1Z\)")


def test_only_a_shipped_order_is_delivered() -> None:
    shipped = given(order.Order, PLACED, order.OrderPaid(4200), order.OrderShipped("1Z"))
    shipped.when(order.Deliver()).then(order.OrderDelivered()).then_state(
        lambda o: o.status is order.Status.DELIVERED
    )
    given(order.Order, PLACED).when(order.Deliver()).raises(Rejected, match="it is placed")


def test_an_order_cannot_be_cancelled_after_shipping() -> None:
    shipped = given(order.Order, PLACED, order.OrderPaid(4200), order.OrderShipped("1Z"))
    shipped.when(order.Cancel("too late")).raises(Rejected, match="has shipped")
    delivered = given(
        order.Order, PLACED, order.OrderPaid(4200), order.OrderShipped("1Z"), order.OrderDelivered()
    )
    delivered.when(order.Cancel("too late")).raises(Rejected, match="has shipped")


def test_cancelling_refunds_what_was_paid() -> None:
    given(order.Order, PLACED).when(order.Cancel("oops")).then(order.OrderCancelled("oops", 0))
    given(order.Order, PLACED, order.OrderPaid(4200)).when(order.Cancel("oops")).then(
        order.OrderCancelled("oops", refund=4200)
    ).then_state(lambda o: o.status is order.Status.CANCELLED and o.paid == 0)


def test_a_cancelled_order_cannot_be_paid_or_shipped_and_cancelling_again_changes_nothing() -> None:
    cancelled = given(order.Order, PLACED, order.OrderCancelled("oops", 0))
    cancelled.when(order.Pay(4200)).raises(Rejected, match="cancelled order")
    cancelled.when(order.Ship("1Z")).raises(Rejected, match="cancelled order")
    cancelled.when(order.Cancel("again")).then()
    given(order.Order).when(order.Cancel("oops")).raises(Rejected, match="not placed")


def test_the_whole_lifecycle_in_one_scenario() -> None:
    (
        given(order.Order)
        .when(order.PlaceOrder("ada", LINES))
        .then(PLACED)
        .when(order.Pay(4200))
        .then(order.OrderPaid(4200))
        .when(order.Ship("1Z"))
        .then(order.OrderShipped("1Z"))
        .when(order.Deliver())
        .then(order.OrderDelivered())
        .then_state(order.Order(order.Status.DELIVERED, 4200, 4200, "1Z"))
    )


# -- the inventory -----------------------------------------------------------------------------


def test_restocking_adds_to_the_stock() -> None:
    given(inventory.Item, inventory.Restocked(5)).when(inventory.Restock(3)).then(
        inventory.Restocked(3)
    ).then_state(inventory.Item(stock=8))
    given(inventory.Item).when(inventory.Restock(0)).raises(Rejected, match="positive")


def test_a_reservation_takes_from_the_stock_down_to_zero() -> None:
    given(inventory.Item, inventory.Restocked(2)).when(inventory.Reserve("o-1", 2)).then(
        inventory.Reserved("o-1", 2)
    ).then_state(inventory.Item(stock=0))
    given(inventory.Item, inventory.Restocked(2)).when(inventory.Reserve("o-1", 0)).raises(
        Rejected, match="positive quantity"
    )


def test_a_reservation_beyond_the_stock_is_out_of_stock() -> None:
    error = (
        given(inventory.Item, inventory.Restocked(2), inventory.Reserved("o-1", 1))
        .when(inventory.Reserve("o-2", 2))
        .raises(inventory.OutOfStock, match="cannot reserve 2 for o-2: 1 in stock")
    )
    assert (error.order_id, error.requested, error.available) == ("o-2", 2, 1)
    assert isinstance(error, Rejected)


async def _reserve_concurrently(refs: list[object], orders: int) -> tuple[int, int, int]:
    """Reserve one unit per order, all at once, spread over ``refs``.

    :return: how many succeeded, how many were out of stock, and the most asks in flight at once
    """
    succeeded = refused = in_flight = most_in_flight = 0

    async def reserve_one(ref: object, order_id: str) -> None:
        nonlocal succeeded, refused, in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            await ref.ask(inventory.Reserve(order_id, 1))  # type: ignore[attr-defined]
        except inventory.OutOfStock:
            refused += 1
        else:
            succeeded += 1
        finally:
            in_flight -= 1

    async with anyio.create_task_group() as group:
        for n in range(orders):
            group.start_soon(reserve_one, refs[n % len(refs)], f"order-{n}")
    return succeeded, refused, most_in_flight


@pytest.mark.parametrize("max_batch", [1, 100])
async def test_concurrent_reservations_never_take_the_stock_below_zero(max_batch: int) -> None:
    async with runtime(max_batch=max_batch) as opened:
        item = opened.ref(inventory.Item, "sku-42")
        await item.ask(inventory.Restock(20))
        succeeded, refused, most_in_flight = await _reserve_concurrently([item], 50)
        assert most_in_flight == 50  # all 50 asks were waiting at the same time
        assert (succeeded, refused) == (20, 30)
        assert (await item.state()).stock == 0
        stored = [e async for e in opened.store.read_stream(item.stream_id)]
        assert [e.type for e in stored] == ["Restocked"] + ["Reserved"] * 20
        assert len({e.data["order_id"] for e in stored[1:]}) == 20


async def test_two_runtimes_on_one_database_never_take_the_stock_below_zero(
    tmp_path: Path,
) -> None:
    # two actors for one item, in two runtimes: the version check on append makes the loser
    # of each race reload and decide again, so the stock still cannot go below zero
    path = tmp_path / "inventory.db"
    async with Runtime(SQLiteEventStore(path)) as first, Runtime(SQLiteEventStore(path)) as second:
        refs = [first.ref(inventory.Item, "sku-42"), second.ref(inventory.Item, "sku-42")]
        await refs[0].ask(inventory.Restock(20))
        # one race for certain: the second runtime's actor holds version 1 when the first
        # runtime appends version 2, so its reservation conflicts, reloads and decides again
        assert (await refs[1].state()).stock == 20
        await refs[0].ask(inventory.Reserve("early-1", 1))
        await refs[1].ask(inventory.Reserve("early-2", 1))
        assert second.statistics().conflicts_retried == 1
        assert (await refs[1].state()).stock == 18
        # then as many races as the timing gives: the stock still never goes below zero
        succeeded, refused, _ = await _reserve_concurrently(list(refs), 50)
        assert (succeeded, refused) == (18, 32)
        stored = [e async for e in first.store.read_stream(refs[0].stream_id)]
        assert [e.type for e in stored] == ["Restocked"] + ["Reserved"] * 20
