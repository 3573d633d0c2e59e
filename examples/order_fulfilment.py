"""Order fulfilment as a process manager: reserve stock, charge the payment, ship.

The stock is released when the payment is refused, and the order cancelled if it is not paid
15 minutes after the stock was reserved. Each step is a command the ``Fulfilment`` process
manager records in its own stream before the router sends it, so a crash never sends one twice
or loses one. Tests: ``tests/test_process_managers.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import anyio
import attrs

from actorsource import (
    Aggregate,
    Cancel,
    InMemoryEventStore,
    Outcome,
    ProcessManager,
    ProcessRouter,
    Rejected,
    Runtime,
    Schedule,
    Send,
    Timers,
    apply,
    command,
    on_event,
    on_outcome,
)

# -- the order


@attrs.frozen
class PlaceOrder:
    order_id: str
    sku: str
    quantity: int
    amount: int  # in cents
    card: str  # "ok", "declined", or "3ds" (the customer must confirm)


@attrs.frozen
class ShipOrder:
    pass


@attrs.frozen
class CancelOrder:
    reason: str


@attrs.frozen
class OrderPlaced:
    order_id: str
    sku: str
    quantity: int
    amount: int
    card: str


@attrs.frozen
class OrderShipped:
    pass


@attrs.frozen
class OrderCancelled:
    reason: str


@attrs.define
class Order(Aggregate):
    order_id: str = ""
    status: str = "new"

    @command
    def place(self, cmd: PlaceOrder) -> list[object]:
        if self.status != "new":
            raise Rejected("the order is placed already")
        return [OrderPlaced(cmd.order_id, cmd.sku, cmd.quantity, cmd.amount, cmd.card)]

    @command
    def ship(self, cmd: ShipOrder) -> OrderShipped:
        if self.status != "placed":
            raise Rejected(f"cannot ship an order that is {self.status}")
        return OrderShipped()

    @command
    def cancel(self, cmd: CancelOrder) -> OrderCancelled:
        if self.status != "placed":
            raise Rejected(f"cannot cancel an order that is {self.status}")
        return OrderCancelled(cmd.reason)

    @apply
    def placed(self, event: OrderPlaced) -> None:
        self.status = "placed"

    @apply
    def shipped(self, event: OrderShipped) -> None:
        self.status = "shipped"

    @apply
    def cancelled(self, event: OrderCancelled) -> None:
        self.status = "cancelled"


# -- the warehouse: one stream holds the stock of every sku


@attrs.frozen
class Restock:
    sku: str
    quantity: int


@attrs.frozen
class ReserveStock:
    order_id: str
    sku: str
    quantity: int


@attrs.frozen
class ReleaseStock:
    order_id: str


@attrs.frozen
class Restocked:
    sku: str
    quantity: int


@attrs.frozen
class StockReserved:
    order_id: str
    sku: str
    quantity: int


@attrs.frozen
class StockReleased:
    order_id: str
    sku: str
    quantity: int


@attrs.define
class Warehouse(Aggregate):
    stock: dict[str, int] = attrs.field(factory=dict)
    reserved: dict[str, tuple[str, int]] = attrs.field(factory=dict)

    @command
    def restock(self, cmd: Restock) -> Restocked:
        return Restocked(cmd.sku, cmd.quantity)

    @command
    def reserve(self, cmd: ReserveStock) -> StockReserved:
        if cmd.order_id in self.reserved:
            raise Rejected(f"order {cmd.order_id} holds a reservation already")
        if self.stock.get(cmd.sku, 0) < cmd.quantity:
            raise Rejected(f"out of stock: {cmd.sku}")
        return StockReserved(cmd.order_id, cmd.sku, cmd.quantity)

    @command
    def release(self, cmd: ReleaseStock) -> StockReleased:
        if cmd.order_id not in self.reserved:
            raise Rejected(f"order {cmd.order_id} holds no reservation")
        sku, quantity = self.reserved[cmd.order_id]
        return StockReleased(cmd.order_id, sku, quantity)

    @apply
    def restocked(self, event: Restocked) -> None:
        self.stock[event.sku] = self.stock.get(event.sku, 0) + event.quantity

    @apply
    def stock_reserved(self, event: StockReserved) -> None:
        self.stock[event.sku] -= event.quantity
        self.reserved[event.order_id] = (event.sku, event.quantity)

    @apply
    def stock_released(self, event: StockReleased) -> None:
        self.stock[event.sku] += event.quantity
        del self.reserved[event.order_id]


# -- the payment of one order


@attrs.frozen
class ChargePayment:
    order_id: str
    amount: int
    card: str


@attrs.frozen
class ConfirmPayment:
    pass


@attrs.frozen
class CancelPayment:
    pass


@attrs.frozen
class PaymentRequested:
    order_id: str
    amount: int


@attrs.frozen
class PaymentCharged:
    order_id: str
    amount: int


@attrs.frozen
class PaymentCancelled:
    order_id: str


@attrs.define
class Payment(Aggregate):
    order_id: str = ""
    amount: int = 0
    status: str = "new"

    @command
    def charge(self, cmd: ChargePayment) -> PaymentRequested | PaymentCharged:
        if self.status != "new":
            raise Rejected(f"the payment is {self.status} already")
        if cmd.card == "declined":
            raise Rejected("the card was declined")
        if cmd.card == "3ds":  # the customer confirms it (ConfirmPayment), or never does
            return PaymentRequested(cmd.order_id, cmd.amount)
        return PaymentCharged(cmd.order_id, cmd.amount)

    @command
    def confirm(self, cmd: ConfirmPayment) -> PaymentCharged:
        if self.status != "requested":
            raise Rejected(f"cannot confirm a payment that is {self.status}")
        return PaymentCharged(self.order_id, self.amount)

    @command
    def cancel(self, cmd: CancelPayment) -> PaymentCancelled:
        if self.status == "charged":
            raise Rejected("the payment went through already")
        return PaymentCancelled(self.order_id)

    @apply
    def requested(self, event: PaymentRequested) -> None:
        self.order_id, self.amount, self.status = event.order_id, event.amount, "requested"

    @apply
    def charged(self, event: PaymentCharged) -> None:
        self.order_id, self.amount, self.status = event.order_id, event.amount, "charged"

    @apply
    def payment_cancelled(self, event: PaymentCancelled) -> None:
        self.status = "cancelled"


# -- the process manager: one instance per order, keyed by the order's id


@attrs.frozen
class PaymentOverdue:
    """The timeout: delivered by a durable timer unless the payment came first."""


@attrs.frozen
class FulfilmentStarted:
    order_id: str
    amount: int
    card: str


@attrs.frozen
class StageReached:
    stage: str  # paying, cancelling-payment, shipping, cancelling
    reason: str = ""


@attrs.frozen
class FulfilmentEnded:
    result: str  # "shipped", or "cancelled: <why>"


@attrs.define
class Fulfilment(ProcessManager):
    #: how long the customer has to pay once the stock is reserved
    payment_timeout: ClassVar[timedelta] = timedelta(minutes=15)

    order_id: str = ""
    amount: int = 0
    card: str = ""
    stage: str = "new"
    reason: str = ""
    result: str = ""

    @on_event(key=lambda event: event.order_id)
    def order_placed(self, event: OrderPlaced) -> list[object]:
        reserve = ReserveStock(event.order_id, event.sku, event.quantity)
        started = FulfilmentStarted(event.order_id, event.amount, event.card)
        return [started, Send(reserve, to=(Warehouse, "main"))]

    @on_outcome
    def stock_reserved(self, outcome: Outcome, command: ReserveStock) -> list[object]:
        if not outcome.ok:
            return self.cancel_order(f"{outcome.reason}")
        charge = ChargePayment(self.order_id, self.amount, self.card)
        overdue = Schedule(PaymentOverdue(), key="payment", after=self.payment_timeout)
        return [StageReached("paying"), Send(charge, to=(Payment, self.order_id)), overdue]

    @on_outcome
    def charge_sent(self, outcome: Outcome, command: ChargePayment) -> list[object]:
        if outcome.ok:
            return []  # charged at once (PaymentCharged follows), or waiting for the customer
        return [Cancel("payment"), *self.release_and_cancel(f"payment refused: {outcome.reason}")]

    @on_event(key=lambda event: event.order_id)
    def payment_charged(self, event: PaymentCharged) -> list[object]:
        if self.stage not in ("paying", "cancelling-payment"):
            return []
        ship = Send(ShipOrder(), to=(Order, self.order_id))
        return [Cancel("payment"), StageReached("shipping"), ship]

    @command
    def overdue(self, cmd: PaymentOverdue) -> list[object]:
        if self.stage != "paying":
            return []  # paid or refused meanwhile
        cancel = Send(CancelPayment(), to=(Payment, self.order_id))
        return [StageReached("cancelling-payment"), cancel]

    @on_outcome
    def payment_cancelled(self, outcome: Outcome, command: CancelPayment) -> list[object]:
        if not outcome.ok or self.stage != "cancelling-payment":
            return []  # paid meanwhile: PaymentCharged ships the order
        return self.release_and_cancel("unpaid after the payment timeout")

    @on_outcome
    def order_done(self, outcome: Outcome, command: ShipOrder | CancelOrder) -> list[object]:
        if isinstance(command, ShipOrder):
            return [FulfilmentEnded("shipped" if outcome.ok else f"not shipped: {outcome.reason}")]
        return [FulfilmentEnded(f"cancelled: {self.reason}")]

    @on_outcome
    def stock_released(self, outcome: Outcome, command: ReleaseStock) -> None:
        return None

    def release_and_cancel(self, why: str) -> list[object]:
        return [Send(ReleaseStock(self.order_id), to=(Warehouse, "main")), *self.cancel_order(why)]

    def cancel_order(self, why: str) -> list[object]:
        return [StageReached("cancelling", why), Send(CancelOrder(why), to=(Order, self.order_id))]

    @apply
    def started(self, event: FulfilmentStarted) -> None:
        self.order_id, self.amount, self.card = event.order_id, event.amount, event.card
        self.stage = "reserving"

    @apply
    def reached(self, event: StageReached) -> None:
        self.stage = event.stage
        self.reason = event.reason or self.reason

    @apply
    def ended(self, event: FulfilmentEnded) -> None:
        self.stage, self.result = "ended", event.result


async def main() -> None:
    async with Runtime(InMemoryEventStore(), timers=Timers([Fulfilment])) as runtime:
        await runtime.ref(Warehouse, "main").ask(Restock("book", 5))
        router = ProcessRouter(runtime, [Fulfilment], aggregates=[Order, Payment, Warehouse])
        await runtime.ref(Order, "1").ask(PlaceOrder("1", "book", 2, 2500, "ok"))
        await runtime.ref(Order, "2").ask(PlaceOrder("2", "book", 1, 900, "declined"))
        # a service runs it in the background instead: ``async with router: ...``
        await router.run_until_idle()
        for order_id in ("1", "2"):
            state = await runtime.ref(Fulfilment, order_id).state()
            print(f"order {order_id}: {state.result}")


if __name__ == "__main__":
    anyio.run(main)
