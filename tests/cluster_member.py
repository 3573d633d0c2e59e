"""A cluster member process for the cluster tests: a runtime with ``cluster=`` on PostgreSQL,
and optionally a steady load of asks through its own refs (routed to the owners).

Run from the repository root::

    python -m tests.cluster_member DSN --schema S --member m0 --lease 1.5 --load 8

It prints ``{"ready": member, "address": ...}`` once it has joined, then one JSON line per
acknowledged ask (``{"cmd", "stream", "version"}``, flushed as the ask returns) or failed ask
(``{"error", "type", "cmd"}``), with ``--sample`` a line ``{"live": [...], "t": ...}`` of the
streams loaded here every 20 ms, and, on SIGTERM, stops the load (asks under way finish),
leaves the cluster cleanly and prints ``{"done": statistics}``.

Each event records the member that decided it (``Added.member``), so that a test can tell
which member stored what.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import time
import uuid
from pathlib import Path

import anyio
import attrs

from actorsource import Aggregate, Cluster, PostgresEventStore, Runtime, apply, command

if __package__ in (None, ""):  # run by path: make ``tests`` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECRET = "the-test-cluster-shared-secret-0123456789"
#: the member deciding here (set at start; read by the aggregate's handler)
MEMBER = ""


@attrs.frozen
class Add:
    amount: int


@attrs.frozen
class Added:
    amount: int
    member: str


@attrs.define
class Counter(Aggregate):
    total: int = 0

    @command
    def add(self, cmd: Add) -> Added:
        return Added(cmd.amount, MEMBER)

    @apply
    def added(self, event: Added) -> None:
        self.total += event.amount


def emit(line: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def load(runtime: Runtime, aggregates: int, stop: anyio.Event, rng: random.Random) -> None:
    while not stop.is_set():
        aggregate_id = str(rng.randrange(aggregates))
        cmd = uuid.uuid4().hex
        try:
            events = await runtime.ref(Counter, aggregate_id).ask(Add(1), command_id=cmd)
        except Exception as exc:
            emit({"error": str(exc), "type": type(exc).__name__, "cmd": cmd})
            continue
        emit({"cmd": cmd, "stream": events[0].stream_id, "version": events[0].version})


async def sample(runtime: Runtime, stop: anyio.Event) -> None:
    dispatcher = runtime._dispatcher
    while not stop.is_set():
        live = [s for s in dispatcher.live_streams() if dispatcher.is_live(s)]
        emit({"live": live, "t": time.time()})
        await anyio.sleep(0.02)


async def main(args: argparse.Namespace) -> None:
    global MEMBER  # noqa: PLW0603  # the test aggregate's handler names the member deciding
    MEMBER = args.member
    cluster = Cluster(
        "test",
        "127.0.0.1:0",
        SECRET,
        shards=args.shards,
        lease=args.lease,
        member_id=args.member,
    )
    store = PostgresEventStore(args.dsn, schema=args.schema)
    stop = anyio.Event()
    rng = random.Random(args.member)
    async with Runtime(store, cluster=cluster) as runtime:
        runtime.ref(Counter, "warm-up")  # the aggregates this member serves
        assert runtime.cluster is not None
        emit({"ready": args.member, "address": runtime.cluster.address})
        async with anyio.create_task_group() as group:

            async def on_term() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        stop.set()
                        return

            group.start_soon(on_term)
            for _ in range(args.load):
                group.start_soon(load, runtime, args.aggregates, stop, rng)
            if args.sample:
                group.start_soon(sample, runtime, stop)
        statistics = runtime.statistics()
    emit(
        {
            "done": {
                "conflicts_retried": statistics.conflicts_retried,
                "actor_failures": statistics.actor_failures,
                "activations": statistics.activations,
                "commands_processed": statistics.commands_processed,
            }
        }
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster_member")
    parser.add_argument("dsn")
    parser.add_argument("--schema", required=True)
    parser.add_argument("--member", required=True)
    parser.add_argument("--lease", type=float, default=1.5)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--load", type=int, default=0, help="concurrent asking loops")
    parser.add_argument("--aggregates", type=int, default=40)
    parser.add_argument("--sample", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    anyio.run(main, parse(sys.argv[1:]))
