"""Read models in PostgreSQL, written in the store's own transactions.

- ``Balances`` is an exactly-once projection: its async handlers write the ``balances`` table
  through ``ctx.transaction`` (an ``asyncpg.Connection``) in the transaction that moves its
  checkpoint, one transaction per batch of events, so that a crash can neither lose nor repeat
  an update.
- ``Movements`` is an inline projection: its handler runs inside each append's transaction, so
  that the row is there when ``ask`` returns (read-your-writes).

Both write unqualified table names: the transaction's ``search_path`` starts with the store's
schema, so the tables live beside the events.

Run it with a database you may create a schema in::

    python examples/postgres_read_models.py "postgresql:///bank?host=/var/run/postgresql" bank
"""

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anyio
import asyncpg  # type: ignore[import-untyped]
import attrs

from actorsource import (
    Aggregate,
    PostgresEventStore,
    Projection,
    ProjectionContext,
    ResetContext,
    Runtime,
    apply,
    command,
    handle,
)


@attrs.frozen
class Deposit:
    amount: int


@attrs.frozen
class Deposited:  # events are storage formats: name and fields are a contract
    amount: int


@attrs.define
class Account(Aggregate):
    balance: int = 0

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        return Deposited(cmd.amount)

    @apply
    def deposited(self, event: Deposited) -> None:
        self.balance += event.amount


#: the read models' tables, made in the store's schema before the projections start
TABLES = """
CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, amount bigint NOT NULL);
CREATE TABLE IF NOT EXISTS movements (position bigint PRIMARY KEY, account text, amount bigint);
"""


class Balances(Projection):
    mode: ClassVar[Any] = "exactly_once"

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext[asyncpg.Connection]) -> None:
        await ctx.transaction.execute(  # no commit: the store commits it with the checkpoint
            "INSERT INTO balances VALUES ($1, $2) "
            "ON CONFLICT (account) DO UPDATE SET amount = balances.amount + excluded.amount",
            ctx.record.stream_id,
            event.amount,
        )

    async def reset(self, ctx: ResetContext[asyncpg.Connection]) -> None:
        await ctx.transaction.execute("TRUNCATE balances")  # before a rebuild


class Movements(Projection):
    mode: ClassVar[Any] = "inline"

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext[asyncpg.Connection]) -> None:
        await ctx.transaction.execute(
            "INSERT INTO movements VALUES ($1, $2, $3)",
            ctx.record.position,
            ctx.record.stream_id,
            event.amount,
        )


async def main(dsn: str, schema: str) -> None:
    async with PostgresEventStore(dsn, schema=schema) as store:
        async with connect(dsn, schema) as conn:  # your migrations' job, once the schema exists
            await conn.execute(TABLES)

        async with Runtime(store) as runtime:
            runtime.add_projection(Balances())
            runtime.add_projection(Movements())
            await runtime.wait_for_projection(Movements)  # live: every ask now runs it

            for account, amount in (("alice", 30), ("bob", 5), ("alice", 12)):
                recorded = await runtime.ref(Account, account).ask(Deposit(amount))
                # read-your-writes: the inline row is committed with the event
                async with connect(dsn, schema) as reader:
                    row = await reader.fetchrow(
                        "SELECT account, amount FROM movements WHERE position = $1",
                        recorded[-1].position,
                    )
                print(f"movement {recorded[-1].position}: {row['account']} +{row['amount']}")

            await runtime.wait_for_projection(Balances)  # exactly once, in the background
            async with connect(dsn, schema) as reader:
                for row in await reader.fetch("SELECT * FROM balances ORDER BY account"):
                    print(f"balance of {row['account']}: {row['amount']}")


@contextlib.asynccontextmanager
async def connect(dsn: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the application's own (as a web request would have one)."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        yield conn
    finally:
        await conn.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "bank")
