"""A projection process for the crash tests: projects deposits, and can die mid-way.

Run from the repository root::

    python -m tests.workers.projector DB MODE [--crash-at POSITION] [--batch-size N]
    python -m tests.workers.projector DSN MODE --schema SCHEMA [--crash-at POSITION] ...

MODE is ``at_least_once`` or ``exactly_once``. Every handled deposit inserts a row
``(position)`` into the table ``seen``: in the exactly-once mode through the store's own
transaction, in the at-least-once mode through a separate connection that commits each row at
once (a read model outside the event store). On SQLite (DB, a file) the at-least-once table is
in ``DB.view``; on PostgreSQL (``--schema``: the store's schema in DSN) both tables are in the
schema, written by an async handler. With ``--crash-at``, the process dies right after the
handler wrote the row of that position and before any checkpoint could be saved: on SQLite by
``os._exit(3)`` (no cleanup), on PostgreSQL by SIGKILL. Without it, the process projects up to
the head and exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any, ClassVar

import anyio

from actorsource import (
    EventStore,
    PostgresEventStore,
    Projection,
    ProjectionContext,
    Runtime,
    SQLiteEventStore,
    handle,
)

if __package__ in (None, ""):  # run by path: make ``tests`` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.domain import Deposited


class _Seen(Projection):
    name: ClassVar[str | None] = "seen"
    crash_at: int | None = None

    def _record(self, conn: sqlite3.Connection, ctx: ProjectionContext) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS seen (position INTEGER)")
        conn.execute("INSERT INTO seen VALUES (?)", (ctx.record.position,))


class AtLeastOnce(_Seen):
    mode: ClassVar[Any] = "at_least_once"
    durable: ClassVar[Any] = True  # its table outlives the process

    def __init__(self, view: Path) -> None:
        self.conn = sqlite3.connect(view, isolation_level=None)

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self._record(self.conn, ctx)  # committed at once (autocommit)
        if ctx.record.position == self.crash_at:
            os._exit(3)


class ExactlyOnce(_Seen):
    mode: ClassVar[Any] = "exactly_once"

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self._record(ctx.transaction, ctx)  # in the store's transaction, with the checkpoint
        if ctx.record.position == self.crash_at:
            os._exit(3)


class PostgresAtLeastOnce(_Seen):
    """At least once on PostgreSQL: each row committed at once on a connection of its own."""

    mode: ClassVar[Any] = "at_least_once"
    durable: ClassVar[Any] = True

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self.conn: Any = None

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        if self.conn is None:
            import asyncpg  # type: ignore[import-untyped]

            self.conn = await asyncpg.connect(self.dsn)
        table = f'"{self.schema}".seen'
        await self.conn.execute(f"INSERT INTO {table} VALUES ($1)", ctx.record.position)
        if ctx.record.position == self.crash_at:
            os.kill(os.getpid(), signal.SIGKILL)


class PostgresExactlyOnce(_Seen):
    """Exactly once on PostgreSQL: ``seen`` (unqualified) is found in the store's schema."""

    mode: ClassVar[Any] = "exactly_once"

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext[Any]) -> None:
        await ctx.transaction.execute("INSERT INTO seen VALUES ($1)", ctx.record.position)
        if ctx.record.position == self.crash_at:
            os.kill(os.getpid(), signal.SIGKILL)  # the row written, its transaction open


async def run(args: argparse.Namespace) -> int:
    projection: _Seen
    store: EventStore
    if args.schema is not None:
        store = PostgresEventStore(args.db, schema=args.schema)
        if args.mode == "at_least_once":
            projection = PostgresAtLeastOnce(args.db, args.schema)
        else:
            projection = PostgresExactlyOnce()
    else:
        db = Path(args.db)
        store = SQLiteEventStore(db)
        if args.mode == "at_least_once":
            projection = AtLeastOnce(db.with_suffix(".view"))
        else:
            projection = ExactlyOnce()
    projection.crash_at = args.crash_at
    async with Runtime(store) as runtime:
        runtime.add_projection(projection, batch_size=args.batch_size)
        await runtime.wait_for_projection("seen")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="a SQLite file, or with --schema a postgresql:// DSN")
    parser.add_argument("mode", choices=["at_least_once", "exactly_once"])
    parser.add_argument("--schema", default=None, help="the PostgreSQL store's schema")
    parser.add_argument("--crash-at", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args(argv)
    return anyio.run(run, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
