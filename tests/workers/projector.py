"""A projection process for the crash tests: projects deposits, and can die mid-way.

Run from the repository root::

    python -m tests.workers.projector DB MODE [--crash-at POSITION] [--batch-size N]

MODE is ``at_least_once`` or ``exactly_once``. Every handled deposit inserts a row
``(position)`` into the table ``seen``: in the exactly-once mode through the store's own
transaction (in DB), in the at-least-once mode through a separate connection to ``DB.view``
that commits each row at once (a read model outside the event store). With ``--crash-at``,
the process dies (``os._exit(3)``, no cleanup, like a kill) right after the handler wrote the
row of that position and before any checkpoint could be saved. Without it, the process
projects up to the head and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any, ClassVar

import anyio

from actorsource import Projection, ProjectionContext, Runtime, SQLiteEventStore, handle

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


async def run(args: argparse.Namespace) -> int:
    db = Path(args.db)
    projection: _Seen
    if args.mode == "at_least_once":
        projection = AtLeastOnce(db.with_suffix(".view"))
    else:
        projection = ExactlyOnce()
    projection.crash_at = args.crash_at
    async with Runtime(SQLiteEventStore(db)) as runtime:
        runtime.add_projection(projection, batch_size=args.batch_size)
        await runtime.wait_for_projection("seen")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("mode", choices=["at_least_once", "exactly_once"])
    parser.add_argument("--crash-at", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args(argv)
    return anyio.run(run, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
