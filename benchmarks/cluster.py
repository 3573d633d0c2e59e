"""W1 (many aggregates, many concurrent callers) through a cluster of three members against
one runtime, on PostgreSQL, in alternating rounds of the same sitting.

- ``single``: one Runtime (no cluster) in this process, ``CALLERS`` callers asking ``COMMANDS``
  deposits spread over ``AGGREGATES`` aggregates;
- ``cluster``: three member processes (``Runtime(store, cluster=...)``), each running a third of
  the callers and commands through its own refs: an ask goes to the local actor when this member
  owns the aggregate's shard, else over TCP to the owner (about two asks in three).

Each round uses a fresh schema. Prints throughput and ask latency p50/p99 (ms), with the
cluster's split into local and routed asks, and the conflicts (zero: one activation per
aggregate). Asserts nothing::

    python benchmarks/cluster.py [rounds]

The DSN comes from ``ACTORSOURCE_BENCH_POSTGRES_DSN`` (else ``ACTORSOURCE_TEST_POSTGRES_DSN``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import attrs

from actorsource import Aggregate, Cluster, PostgresEventStore, Runtime, apply, command

AGGREGATES = 300
CALLERS = 150
COMMANDS = 15_000
SHARDS = 64
SECRET = "benchmark-cluster-secret-0123456789"
MEMBERS = ("m0", "m1", "m2")


@attrs.frozen
class Deposit:
    amount: int


@attrs.frozen
class Deposited:
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


def dsn() -> str:
    found = os.environ.get("ACTORSOURCE_BENCH_POSTGRES_DSN") or os.environ.get(
        "ACTORSOURCE_TEST_POSTGRES_DSN"
    )
    if not found:
        sys.exit("set ACTORSOURCE_BENCH_POSTGRES_DSN to a postgresql:// URI")
    return found


async def drop(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn())
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def asks(
    runtime: Runtime, callers: int, commands: int, first_caller: int
) -> tuple[float, list[tuple[float, bool]]]:
    """Run ``commands`` asks from ``callers`` callers; return elapsed and (latency, routed)."""
    refs = [runtime.ref(Account, f"acc-{i}") for i in range(AGGREGATES)]
    cluster = runtime.cluster
    member = cluster.member_id if cluster is not None else ""
    per_caller, extra = divmod(commands, callers)
    latencies: list[tuple[float, bool]] = []
    clock = time.perf_counter

    async def caller(number: int) -> None:
        count = per_caller + (1 if number < extra else 0)
        for i in range(count):
            ref = refs[(first_caller + number + i * 7) % AGGREGATES]
            owner = cluster.owner_of(ref.stream_id) if cluster is not None else None
            routed = owner is not None and owner.member_id != member
            started = clock()
            await ref.ask(Deposit(1))
            latencies.append((clock() - started, routed))

    started = clock()
    async with anyio.create_task_group() as group:
        for number in range(callers):
            group.start_soon(caller, number)
    return clock() - started, latencies


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


# -- a member process --------------------------------------------------------------------------


async def member(args: argparse.Namespace) -> None:
    cluster = Cluster(
        "bench", "127.0.0.1:0", SECRET, shards=SHARDS, lease=5.0, member_id=args.member
    )
    async with Runtime(PostgresEventStore(dsn(), schema=args.schema), cluster=cluster) as runtime:
        runtime.ref(Account, "warm-up")
        print(json.dumps({"ready": args.member}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # "go"
        index = MEMBERS.index(args.member)
        elapsed, latencies = await asks(
            runtime, CALLERS // len(MEMBERS), COMMANDS // len(MEMBERS), index * 1000
        )
        stats = runtime.statistics()
        print(
            json.dumps(
                {
                    "seconds": elapsed,
                    "latencies": latencies,
                    "conflicts": stats.conflicts_retried,
                }
            ),
            flush=True,
        )
        await anyio.to_thread.run_sync(sys.stdin.readline)  # "stop": the others may still ask


# -- the rounds ------------------------------------------------------------------------------------


async def single_round(schema: str) -> dict[str, Any]:
    await drop(schema)
    async with Runtime(PostgresEventStore(dsn(), schema=schema)) as runtime:
        elapsed, latencies = await asks(runtime, CALLERS, COMMANDS, 0)
        conflicts = runtime.statistics().conflicts_retried
    await drop(schema)
    return {
        "commands_per_s": COMMANDS / elapsed,
        **summary([latency for latency, _ in latencies]),
        "conflicts": conflicts,
    }


async def settled(schema: str) -> bool:
    import asyncpg

    from actorsource.cluster import rendezvous

    conn = await asyncpg.connect(dsn())
    try:
        rows = await conn.fetch(f'SELECT shard, owner FROM "{schema}".shard_leases')
    finally:
        await conn.close()
    found = {row[0]: row[1] for row in rows}
    return found == {s: rendezvous(s, list(MEMBERS)) for s in range(SHARDS)}


async def cluster_round(schema: str) -> dict[str, Any]:
    await drop(schema)
    here = Path(__file__).resolve()  # noqa: ASYNC240  # once per round, not timed
    processes = [
        subprocess.Popen(  # noqa: ASYNC220  # started before the timed part
            [sys.executable, str(here), "--member", name, "--schema", schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in MEMBERS
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            await anyio.to_thread.run_sync(process.stdout.readline)
        with anyio.fail_after(30):
            while not await settled(schema):  # noqa: ASYNC110  # polls the database
                await anyio.sleep(0.1)
        started = time.perf_counter()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            assert process.stdout is not None
            results.append(json.loads(await anyio.to_thread.run_sync(process.stdout.readline)))
        elapsed = time.perf_counter() - started
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("stop\n")
            process.stdin.flush()
        for process in processes:
            await anyio.to_thread.run_sync(process.wait)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    await drop(schema)
    everything = [(lat, routed) for r in results for lat, routed in r["latencies"]]
    return {
        "commands_per_s": COMMANDS // len(MEMBERS) * len(MEMBERS) / elapsed,
        **summary([lat for lat, _ in everything]),
        "local": summary([lat for lat, routed in everything if not routed]),
        "routed": summary([lat for lat, routed in everything if routed]),
        "routed_share": sum(1 for _, routed in everything if routed) / max(len(everything), 1),
        "conflicts": sum(r["conflicts"] for r in results),
    }


async def driver(rounds: int) -> None:
    print(
        f"W1 on PostgreSQL: {COMMANDS:,} asks, {CALLERS} callers, {AGGREGATES} aggregates; "
        f"cluster: 3 member processes, {SHARDS} shards",
        flush=True,
    )
    for number in range(rounds):
        for kind, run in (("single", single_round), ("cluster", cluster_round)):
            result = await run(f"bench_cluster_{kind}")
            line = (
                f"round {number + 1} {kind:>7}: {result['commands_per_s']:8,.0f} asks/s  "
                f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                f"conflicts {result['conflicts']}"
            )
            if kind == "cluster":
                line += (
                    f"  | local p50 {result['local']['p50_ms']:.2f} p99 "
                    f"{result['local']['p99_ms']:.2f} ms, routed ({result['routed_share']:.0%}) "
                    f"p50 {result['routed']['p50_ms']:.2f} p99 {result['routed']['p99_ms']:.2f} ms"
                )
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/cluster.py")
    parser.add_argument("rounds", nargs="?", type=int, default=2)
    parser.add_argument("--member")
    parser.add_argument("--schema")
    args = parser.parse_args()
    if args.member:
        anyio.run(member, args)
    else:
        anyio.run(driver, args.rounds)


if __name__ == "__main__":
    main()
