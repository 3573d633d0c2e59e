"""Inventory that never goes negative, however many orders reserve the last items at once.

50 orders reserve one unit each of an item with 20 in stock, all at the same time. Exactly 20
succeed and 30 are refused, every run. No lock is needed: the check (enough in stock?) and the
event that depends on it (``Reserved``) happen in one command, and the item's actor takes one
command at a time from its mailbox, so two reservations can never both see the last unit.
Another process writing to the same item is caught by the version check on append: the actor
reloads and decides again. Unit tests of this aggregate, written with ``actorsource.testing``,
are in ``tests/test_example_domains.py``.
"""

import anyio
import attrs

from actorsource import Aggregate, Rejected, Runtime, SQLiteEventStore, apply, command

# -- commands


@attrs.frozen
class Restock:
    quantity: int


@attrs.frozen
class Reserve:
    order_id: str
    quantity: int


# -- events: storage formats (their names and fields are a contract with every database that
# holds them)


@attrs.frozen
class Restocked:
    quantity: int


@attrs.frozen
class Reserved:
    order_id: str
    quantity: int


class OutOfStock(Rejected):
    """Raised when a reservation asks for more than is in stock."""

    def __init__(self, order_id: str, requested: int, available: int) -> None:
        self.order_id = order_id
        self.requested = requested
        self.available = available
        super().__init__(f"cannot reserve {requested} for {order_id}: {available} in stock")


@attrs.define
class Item(Aggregate):
    stock: int = 0

    @command
    def restock(self, cmd: Restock) -> Restocked:
        if cmd.quantity <= 0:
            raise Rejected(f"a restock must add a positive quantity, got {cmd.quantity}")
        return Restocked(cmd.quantity)

    @command
    def reserve(self, cmd: Reserve) -> Reserved:
        if cmd.quantity <= 0:
            raise Rejected(f"a reservation must be of a positive quantity, got {cmd.quantity}")
        if cmd.quantity > self.stock:
            raise OutOfStock(cmd.order_id, cmd.quantity, self.stock)
        return Reserved(cmd.order_id, cmd.quantity)

    @apply
    def restocked(self, event: Restocked) -> None:
        self.stock += event.quantity

    @apply
    def reserved(self, event: Reserved) -> None:
        self.stock -= event.quantity


async def main() -> None:
    async with Runtime(SQLiteEventStore("inventory.db")) as runtime:
        item = runtime.ref(Item, "sku-42")
        await item.ask(Restock(20))
        succeeded: list[str] = []
        refused: list[str] = []

        async def reserve_one(order_id: str) -> None:
            try:
                await item.ask(Reserve(order_id, 1))
            except OutOfStock:
                refused.append(order_id)
            else:
                succeeded.append(order_id)

        async with anyio.create_task_group() as orders:  # 50 orders at the same time
            for n in range(50):
                orders.start_soon(reserve_one, f"order-{n}")

        print(f"{len(succeeded)} reservations succeeded, {len(refused)} were refused")
        print(f"stock left: {(await item.state()).stock}")


if __name__ == "__main__":
    anyio.run(main)
