"""A process running the order fulfilment saga, for the SIGKILL tests.

Run from the repository root::

    python -m tests.workers.sagas DB [--payment-timeout SECONDS]

``DB`` is a SQLite file, or a ``postgresql://`` DSN (with ``--schema``). It runs a runtime that
delivers the ``Fulfilment`` timers, and a ``ProcessRouter`` for ``Fulfilment``, until its stdin
closes. It prints ``ready`` once both run.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from actorsource import PostgresEventStore, ProcessRouter, Runtime, SQLiteEventStore, Timers

if __package__ in (None, ""):  # run by path: make ``examples`` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.order_fulfilment import Fulfilment, Order, Payment, Warehouse


def make_store(args: argparse.Namespace) -> Any:
    if args.db.startswith("postgresql://"):
        return PostgresEventStore(args.db, schema=args.schema, pool_size=2)
    return SQLiteEventStore(args.db)


async def run(args: argparse.Namespace) -> int:
    Fulfilment.payment_timeout = timedelta(seconds=args.payment_timeout)
    timers = Timers([Fulfilment], lease=0.5, poll_interval=0.05)
    async with Runtime(make_store(args), timers=timers) as runtime:
        aggregates = [Order, Payment, Warehouse]
        async with ProcessRouter(runtime, [Fulfilment], aggregates=aggregates, poll_interval=0.05):
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin
    sys.stdout.write("stopping\n")
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="the SQLite file, or a postgresql:// DSN")
    parser.add_argument("--schema", default="actorsource", help="the PostgreSQL schema")
    parser.add_argument("--payment-timeout", type=float, default=0.3)
    return anyio.run(run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
