"""The read side of the bank: a balances table, a "recent activity" view, and time travel.

- ``Balances`` is an exactly-once projection: its handlers write a SQL table in the event
  store's own SQLite file, in the same transaction as the projection's checkpoint, so that a
  crash can neither lose nor repeat an update. The table outlives the process, so the
  projection goes on from its checkpoint at the next start; its ``reset`` clears the table for
  a rebuild (``actorsource projections read_side.db rebuild Balances --app read_side``).
- ``RecentActivity`` is an at-least-once projection kept in memory, built again from the log
  at every start: the last few movements across all accounts. Its handler is idempotent (it
  keys entries by event id), as at-least-once handlers must be.
- ``runtime.state_at`` answers "what was the balance then?".

Run it twice: the second run gives the same answers. Its commands carry ids, so repeating them
is answered from the log instead of being applied again, and both read models come back whole.
"""

import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import ClassVar

import anyio
import attrs

from actorsource import (
    Aggregate,
    Projection,
    ProjectionContext,
    Rejected,
    ResetContext,
    Runtime,
    SQLiteEventStore,
    apply,
    command,
    handle,
)

# -- the write side: an account that cannot go overdrawn


@attrs.frozen
class Deposit:
    amount: int


@attrs.frozen
class Withdraw:
    amount: int


@attrs.frozen
class Deposited:  # events are storage formats: name and fields are a contract
    amount: int


@attrs.frozen
class Withdrew:
    amount: int


@attrs.define
class Account(Aggregate):
    balance: int = 0

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        if cmd.amount <= 0:
            raise Rejected(f"deposit must be positive, got {cmd.amount}")
        return Deposited(cmd.amount)

    @command
    def withdraw(self, cmd: Withdraw) -> Withdrew:
        if cmd.amount > self.balance:
            raise Rejected(f"insufficient funds: balance {self.balance}, asked {cmd.amount}")
        return Withdrew(cmd.amount)

    @apply
    def deposited(self, event: Deposited) -> None:
        self.balance += event.amount

    @apply
    def withdrew(self, event: Withdrew) -> None:
        self.balance -= event.amount


# -- the read side


class Balances(Projection):
    """Balances in a SQL table of the event store's file, updated exactly once per event."""

    mode: ClassVar = "exactly_once"

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self._add(ctx, event.amount)

    @handle
    def withdrew(self, event: Withdrew, ctx: ProjectionContext) -> None:
        self._add(ctx, -event.amount)

    def reset(self, ctx: ResetContext) -> None:
        """Clear the table before a rebuild (in the transaction that resets the checkpoint)."""
        conn: sqlite3.Connection = ctx.transaction
        conn.execute("DROP TABLE IF EXISTS balances")

    def _add(self, ctx: ProjectionContext, amount: int) -> None:
        conn: sqlite3.Connection = ctx.transaction  # the store's transaction: no commit here
        conn.execute(
            "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, balance INTEGER)"
        )
        conn.execute(
            "INSERT INTO balances VALUES (?, ?) "
            "ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
            (ctx.record.stream_id, amount),
        )


class RecentActivity(Projection):
    """The last few movements of all accounts, newest last (at least once: idempotent)."""

    size = 3

    def __init__(self) -> None:
        self.entries: OrderedDict[str, str] = OrderedDict()

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self._add(ctx, f"{ctx.record.stream_id} +{event.amount}")

    @handle
    def withdrew(self, event: Withdrew, ctx: ProjectionContext) -> None:
        self._add(ctx, f"{ctx.record.stream_id} -{event.amount}")

    def _add(self, ctx: ProjectionContext, line: str) -> None:
        self.entries[ctx.record.event_id] = line  # a redelivery overwrites: no duplicate
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


async def main() -> None:
    path = Path("read_side.db")
    async with Runtime(SQLiteEventStore(path)) as runtime:
        runtime.add_projection(Balances())
        activity = RecentActivity()
        runtime.add_projection(activity)

        # a command id makes a command safe to send again (on a second run too): a repeat is
        # answered with the events it stored the first time, not applied twice
        alice, bob = runtime.ref(Account, "alice"), runtime.ref(Account, "bob")
        await alice.ask(Deposit(100), command_id="alice-1")
        await bob.ask(Deposit(50), command_id="bob-1")
        (withdrawal,) = await alice.ask(Withdraw(30), command_id="alice-2")
        await bob.ask(Withdraw(20), command_id="bob-2")
        last = await alice.ask(Deposit(5), command_id="alice-3")

        # projections run in the background: wait (with a deadline) until they handled it
        await runtime.wait_for_projection(Balances, last[-1].position, timeout=10)
        await runtime.wait_for_projection(RecentActivity, last[-1].position, timeout=10)

        with sqlite3.connect(path) as conn:
            for account, balance in conn.execute(
                "SELECT account, balance FROM balances ORDER BY account"
            ):
                print(f"balance {account}: {balance}")
        print("recent:", ", ".join(activity.entries.values()))

        then = await runtime.state_at(Account, "alice", version=withdrawal.version)
        print(f"alice after version {withdrawal.version}: {then.balance}")
        before = await runtime.state_at(Account, "alice", at=withdrawal.recorded_at)
        print(f"alice at the time of the withdrawal: {before.balance}")

        for status in runtime.statistics().projections:
            print(f"{status.name}: position {status.position}, lag {status.lag_events}")


if __name__ == "__main__":
    anyio.run(main)
