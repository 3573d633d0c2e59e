"""An e-commerce order: placed, paid, shipped, delivered or cancelled, and the rules between.

Each rule is a check in a command handler that raises ``Rejected`` with a message saying why;
the events are the facts that made it through. Unit tests of this aggregate, written with
``actorsource.testing``, are in ``tests/test_example_domains.py``.
"""

import enum

import anyio
import attrs

from actorsource import Aggregate, Rejected, Runtime, SQLiteEventStore, apply, command

# -- commands: imperative, and they may be refused


@attrs.frozen
class OrderLine:
    """One line of an order; part of the stored ``OrderPlaced`` event."""

    sku: str
    quantity: int
    unit_price: int  # in cents: money is never a float


@attrs.frozen
class PlaceOrder:
    customer: str
    lines: tuple[OrderLine, ...]


@attrs.frozen
class Pay:
    amount: int


@attrs.frozen
class Ship:
    tracking_number: str


@attrs.frozen
class Deliver:
    pass


@attrs.frozen
class Cancel:
    reason: str


# -- events: past tense, and storage formats (their names and fields are a contract with every
# database that holds them)


@attrs.frozen
class OrderPlaced:
    customer: str
    lines: tuple[OrderLine, ...]
    total: int


@attrs.frozen
class OrderPaid:
    amount: int


@attrs.frozen
class OrderShipped:
    tracking_number: str


@attrs.frozen
class OrderDelivered:
    pass


@attrs.frozen
class OrderCancelled:
    reason: str
    refund: int  # what the customer gets back: the payment, or 0 if unpaid


# -- the aggregate


class Status(enum.Enum):
    NEW = "new"  # no order placed under this id yet
    PLACED = "placed"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


@attrs.define
class Order(Aggregate):
    status: Status = Status.NEW
    total: int = 0
    paid: int = 0
    tracking_number: str = ""

    @command
    def place(self, cmd: PlaceOrder) -> OrderPlaced:
        if self.status is not Status.NEW:
            raise Rejected(f"the order is already placed (it is {self.status.value})")
        if not cmd.lines:
            raise Rejected("an order needs at least one line")
        for line in cmd.lines:
            if line.quantity <= 0:
                raise Rejected(f"the quantity of {line.sku} must be positive, got {line.quantity}")
            if line.unit_price < 0:
                raise Rejected(f"the price of {line.sku} must not be negative")
        total = sum(line.quantity * line.unit_price for line in cmd.lines)
        return OrderPlaced(cmd.customer, cmd.lines, total)

    @command
    def pay(self, cmd: Pay) -> OrderPaid:
        if self.status is Status.NEW:
            raise Rejected("cannot pay an order that was not placed")
        if self.status is Status.CANCELLED:
            raise Rejected("cannot pay a cancelled order")
        if self.status is not Status.PLACED:
            raise Rejected("the order is already paid")
        if cmd.amount != self.total:
            raise Rejected(f"a payment of {cmd.amount} does not match the order total {self.total}")
        return OrderPaid(cmd.amount)

    @command
    def ship(self, cmd: Ship) -> OrderShipped:
        if self.status in (Status.NEW, Status.PLACED):
            raise Rejected("cannot ship an unpaid order")
        if self.status is Status.CANCELLED:
            raise Rejected("cannot ship a cancelled order")
        if self.status is not Status.PAID:
            raise Rejected(f"the order has already shipped (tracking {self.tracking_number})")
        if not cmd.tracking_number:
            raise Rejected("shipping needs a tracking number")
        return OrderShipped(cmd.tracking_number)

    @command
    def deliver(self, cmd: Deliver) -> OrderDelivered:
        if self.status is not Status.SHIPPED:
            raise Rejected(f"only a shipped order can be delivered (it is {self.status.value})")
        return OrderDelivered()

    @command
    def cancel(self, cmd: Cancel) -> OrderCancelled | None:
        if self.status is Status.NEW:
            raise Rejected("cannot cancel an order that was not placed")
        if self.status in (Status.SHIPPED, Status.DELIVERED):
            raise Rejected("cannot cancel an order that has shipped")
        if self.status is Status.CANCELLED:
            return None  # cancelling twice changes nothing: no event
        return OrderCancelled(cmd.reason, refund=self.paid)

    @apply
    def placed(self, event: OrderPlaced) -> None:
        self.status = Status.PLACED
        self.total = event.total

    @apply
    def was_paid(self, event: OrderPaid) -> None:
        self.status = Status.PAID
        self.paid = event.amount

    @apply
    def shipped(self, event: OrderShipped) -> None:
        self.status = Status.SHIPPED
        self.tracking_number = event.tracking_number

    @apply
    def delivered(self, event: OrderDelivered) -> None:
        self.status = Status.DELIVERED

    @apply
    def cancelled(self, event: OrderCancelled) -> None:
        self.status = Status.CANCELLED
        self.paid -= event.refund


async def main() -> None:
    async with Runtime(SQLiteEventStore("orders.db")) as runtime:
        order = runtime.ref(Order, "order-1")
        state = await order.state()
        if state.status is not Status.NEW:  # a second run: rebuilt from its events in orders.db
            print(f"order-1 is {state.status.value}, total {state.total}")
            return

        lines = (OrderLine("book", 2, 1500), OrderLine("lamp", 1, 1200))
        placed = await order.ask(PlaceOrder("ada", lines))
        print(f"order-1 placed, total {placed[0].event.total}")
        for refused in (Ship("1Z-001"), Pay(4000)):
            try:
                await order.ask(refused)
            except Rejected as exc:
                print(f"{type(refused).__name__} refused: {exc}")
        await order.ask(Pay(4200))
        await order.ask(Ship("1Z-001"))
        try:
            await order.ask(Cancel("changed my mind"))
        except Rejected as exc:
            print(f"Cancel refused: {exc}")
        await order.ask(Deliver())
        print(f"order-1 is {(await order.state()).status.value}")

        other = runtime.ref(Order, "order-2")
        await other.ask(PlaceOrder("grace", (OrderLine("pen", 3, 500),)))
        await other.ask(Pay(1500))
        cancelled = await other.ask(Cancel("found it cheaper"))
        print(f"order-2 is cancelled, refund {cancelled[0].event.refund}")


if __name__ == "__main__":
    anyio.run(main)
