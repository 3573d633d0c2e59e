"""A writer process for the multi-process tests: asks deposits on a few aggregates, reports acks.

Run from the repository root::

    python -m tests.workers.writer DB --ids a,b,c --aggregate pair --concurrency 16 --asks 0

``DB`` is a SQLite file, or a ``postgresql://`` DSN (with ``--schema``) for the PostgreSQL store.

It prints ``ready`` once its runtime is open (and, with ``--wait-go``, waits for a line on stdin
before writing), then one JSON line per acknowledged ask, written and flushed right after the
ask returns, then ``done`` and the runtime's statistics as JSON (unless it is killed first).
A failed ask prints an ``error`` line.

Each ask carries ``{"cmd": <uuid>, "worker": <name>}`` as metadata, stored with its events.
An ack line reads ``{"cmd", "stream", "amount", "events": [[event_id, version, position], ...]}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import uuid
from pathlib import Path

import anyio
import attrs

from actorsource import (
    Aggregate,
    EventStore,
    PostgresEventStore,
    Runtime,
    SQLiteEventStore,
    apply,
    command,
)

if __package__ in (None, ""):  # run by path: make ``tests`` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.domain import Account, Deposit

#: the fee a Pair charges per credit (each credit stores two events: Credited, FeeCharged)
FEE = 1


@attrs.frozen
class Credit:
    amount: int


@attrs.frozen
class Credited:
    amount: int


@attrs.frozen
class FeeCharged:
    amount: int


@attrs.define
class Pair(Aggregate):
    """Every command stores two events in one append: a credit and its fee."""

    balance: int = 0
    credits: int = 0
    fees: int = 0

    @command
    def credit(self, cmd: Credit) -> list[Credited | FeeCharged]:
        return [Credited(cmd.amount), FeeCharged(FEE)]

    @apply
    def credited(self, event: Credited) -> None:
        self.balance += event.amount
        self.credits += 1

    @apply
    def fee_charged(self, event: FeeCharged) -> None:
        self.balance -= event.amount
        self.fees += 1


def emit(line: str) -> None:
    """Write one line and flush it at once (one write to the pipe: a line is whole or absent)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def make_store(args: argparse.Namespace) -> EventStore:
    """A store on the file, or on the PostgreSQL schema, the arguments name."""
    if args.db.startswith(("postgresql://", "postgres://")):
        return PostgresEventStore(args.db, schema=args.schema, pool_size=2)
    return SQLiteEventStore(args.db)


async def run(args: argparse.Namespace) -> int:
    ids: list[str] = args.ids.split(",")
    rng = random.Random(args.seed)
    remaining = args.asks  # 0: until killed
    failures = 0
    async with contextlib.AsyncExitStack() as stack:
        # several runtimes in this one process, each with its own store on the same database
        runtimes = [
            await stack.enter_async_context(
                Runtime(
                    make_store(args),
                    max_conflict_retries=args.max_conflict_retries,
                    snapshot_every=args.snapshot_every,
                )
            )
            for _ in range(args.runtimes)
        ]
        aggregate: type[Aggregate] = Pair if args.aggregate == "pair" else Account
        emit("ready")
        if args.wait_go:
            go = await anyio.to_thread.run_sync(sys.stdin.readline)
            if go.strip() != "go":
                return 3

        async def asker(runtime: Runtime) -> None:
            nonlocal remaining, failures
            refs = {aggregate_id: runtime.ref(aggregate, aggregate_id) for aggregate_id in ids}
            while True:
                if args.asks:
                    if remaining <= 0:
                        return
                    remaining -= 1
                aggregate_id = rng.choice(ids)
                amount = rng.randint(1, 1000)
                cmd = str(uuid.uuid4())
                message = Credit(amount) if args.aggregate == "pair" else Deposit(amount)
                ref = refs[aggregate_id]
                try:
                    recorded = await ref.ask(message, metadata={"cmd": cmd, "worker": args.name})
                except Exception as exc:  # report, keep going: the test decides
                    failures += 1
                    emit(json.dumps({"error": f"{type(exc).__name__}: {exc}", "cmd": cmd}))
                    continue
                emit(
                    json.dumps(
                        {
                            "cmd": cmd,
                            "stream": ref.stream_id,
                            "amount": amount,
                            "events": [[r.event_id, r.version, r.position] for r in recorded],
                        }
                    )
                )

        async with anyio.create_task_group() as task_group:
            for index in range(args.concurrency):
                task_group.start_soon(asker, runtimes[index % len(runtimes)])
        statistics = [attrs.asdict(runtime.statistics()) for runtime in runtimes]
        counters = [key for key, value in statistics[0].items() if isinstance(value, int)]
        totals = {key: sum(s[key] for s in statistics) for key in counters}
    emit("done " + json.dumps(totals))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="the SQLite file, or a postgresql:// DSN")
    parser.add_argument("--schema", default="actorsource", help="the PostgreSQL schema")
    parser.add_argument("--ids", default="a,b,c", help="aggregate ids, comma separated")
    parser.add_argument("--aggregate", choices=["account", "pair"], default="account")
    parser.add_argument("--asks", type=int, default=0, help="asks in all (0: until killed)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent asking tasks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="writer", help="stored in each event's metadata")
    parser.add_argument("--max-conflict-retries", type=int, default=1000)
    parser.add_argument("--snapshot-every", type=int, default=None)
    parser.add_argument("--wait-go", action="store_true", help="wait for 'go' on stdin")
    parser.add_argument("--runtimes", type=int, default=1, help="runtimes in this process")
    args = parser.parse_args(argv)
    return anyio.run(run, args, backend="asyncio")


if __name__ == "__main__":
    sys.exit(main())
