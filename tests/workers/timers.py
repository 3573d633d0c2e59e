"""A timer-delivering process for the multi-process timer tests.

Run from the repository root::

    python -m tests.workers.timers DB --lease 2 --poll 0.1 [--stall-after N]

``DB`` is a SQLite file, or a ``postgresql://`` DSN (with ``--schema``). It runs a runtime that
delivers the due timers of ``Order`` (tests/timer_domain.py) until its stdin closes. It prints
``ready`` once open, ``claimed OWNER`` for each timer it claims, ``finished OWNER`` for each tick
it marks done, and with ``--stall-after N``, after N finished ticks, ``stalled OWNER`` and then
hangs before marking the next one done (holding its claims, for the test to SIGKILL it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from actorsource import PostgresEventStore, Runtime, SQLiteEventStore, StoredTimer, Timers

if __package__ in (None, ""):  # run by path: make ``tests`` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.timer_domain import Order


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Reporting:
    """Wraps a store's timer calls: reports claims and finishes, stalls when told."""

    def __init__(self, stall_after: int | None) -> None:
        self.stall_after = stall_after
        self.finished = 0

    async def claimed(self, found: list[StoredTimer]) -> list[StoredTimer]:
        for timer in found:
            emit(f"claimed {timer.owner}")
        return found

    async def finishing(self, timer: StoredTimer) -> None:
        if self.stall_after is not None and self.finished >= self.stall_after:
            emit(f"stalled {timer.owner}")
            await asyncio.Event().wait()  # until killed

    def done(self, timer: StoredTimer) -> None:
        self.finished += 1
        emit(f"finished {timer.owner}")


def make_store(args: argparse.Namespace, report: Reporting) -> Any:
    base: Any = PostgresEventStore if args.db.startswith("postgresql://") else SQLiteEventStore

    class Store(base):  # type: ignore[misc,valid-type]
        async def claim_due_timers(
            self,
            claimant: str,
            now: datetime,
            lease: float,
            *,
            limit: int,
            categories: Collection[str] | None = None,
        ) -> list[StoredTimer]:
            found = await super().claim_due_timers(
                claimant, now, lease, limit=limit, categories=categories
            )
            return await report.claimed(found)

        async def finish_timer(
            self, timer: StoredTimer, claimant: str, next_due: datetime | None
        ) -> bool:
            await report.finishing(timer)
            done: bool = await super().finish_timer(timer, claimant, next_due)
            if done:
                report.done(timer)
            return done

    if base is PostgresEventStore:
        return Store(args.db, schema=args.schema, pool_size=2)
    return Store(args.db)


async def run(args: argparse.Namespace) -> int:
    report = Reporting(args.stall_after)
    timers = Timers([Order], lease=args.lease, poll_interval=args.poll, max_claim=args.max_claim)
    async with Runtime(make_store(args, report), timers=timers):
        emit("ready")
        # until the test closes stdin
        await anyio.to_thread.run_sync(sys.stdin.read)
    emit("done")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="the SQLite file, or a postgresql:// DSN")
    parser.add_argument("--schema", default="actorsource", help="the PostgreSQL schema")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--max-claim", type=int, default=3)
    parser.add_argument("--stall-after", type=int, default=None)
    return anyio.run(run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
