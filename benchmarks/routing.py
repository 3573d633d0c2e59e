"""What routing an ask to another member costs, against an ask to the local dispatcher.

A caller member and an owner member, each a Runtime on an InMemoryEventStore (so that the store
costs next to nothing and the numbers are the transport's and the routing's), with a static
placement: "local" asks go to aggregates the caller owns, "routed" ones to aggregates the owner
owns, over TCP on 127.0.0.1 with the HMAC handshake done once per connection. Two shapes: one
caller asking in sequence, and 100 concurrent callers (each its own aggregate). Alternating
rounds (local, routed, local, ...) so that both see the same drift of a shared machine.

The owner runs in a process of its own (``--same-process``: in the caller's process and event
loop, which then does both sides' work). Prints p50/p99 latencies in microseconds, asserts
nothing: ``python benchmarks/routing.py [rounds] [--same-process]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from actorsource import InMemoryEventStore, Runtime
from actorsource._refs import AggregateRef
from actorsource.bench._common import BenchAccount, Deposit
from actorsource.cluster._placement import Owner
from actorsource.cluster._routing import RoutedMailboxes
from actorsource.cluster._transport import Credentials, Peers, Server

SHARDS = 2
SECRET = b"benchmark-secret"
SEQUENTIAL = 2000
CONCURRENT = 100
PER_CALLER = 30


class Static:
    """Shard 0 is the caller's, shard 1 the owner's."""

    def __init__(self, member_id: str, owners: dict[int, Owner]) -> None:
        self.member_id = member_id
        self.owners = owners

    def shard_of(self, stream_id: str) -> int:
        return zlib.crc32(stream_id.encode()) % SHARDS

    def owner(self, shard: int) -> Owner | None:
        return self.owners.get(shard)

    async def wait_for_owner(self, shard: int, timeout: float) -> Owner:  # noqa: ASYNC109
        owner = self.owners.get(shard)
        if owner is None:
            raise TimeoutError
        return owner

    def accepting(self, shard: int) -> bool:
        owner = self.owners.get(shard)
        return owner is not None and owner.member_id == self.member_id

    def invalidate(self, shard: int) -> None:
        pass


@contextlib.asynccontextmanager
async def member(member_id: str, owners: dict[int, Owner]) -> AsyncIterator[tuple[Any, ...]]:
    async with contextlib.AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(Runtime(InMemoryEventStore()))
        runtime.ref(BenchAccount, "warm-up")
        credentials = Credentials("bench", SECRET, member_id)
        peers = await stack.enter_async_context(Peers(credentials))
        routed = RoutedMailboxes(
            runtime._dispatcher,
            Static(member_id, owners),
            peers,
            runtime._codec,
            runtime._deciders.in_category,
        )
        server = await stack.enter_async_context(Server("127.0.0.1:0", credentials, routed.handle))
        yield runtime, routed, server


async def serve_owner() -> None:
    """The owner process: owns shard 1, prints its address, serves until stdin closes."""
    owners: dict[int, Owner] = {}
    async with member("owner", owners) as (_, _, server):
        owners[1] = Owner("owner", server.address, 1)
        print(server.address, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


def ids_in(shard: int, count: int, prefix: str) -> list[str]:
    found = []
    index = 0
    while len(found) < count:
        aggregate_id = f"{prefix}{index}"
        if zlib.crc32(f"BenchAccount-{aggregate_id}".encode()) % SHARDS == shard:
            found.append(aggregate_id)
        index += 1
    return found


async def sequential(refs: list[AggregateRef[Any]]) -> list[float]:
    ref = refs[0]
    latencies = []
    for _ in range(SEQUENTIAL):
        started = time.perf_counter()
        await ref.ask(Deposit(1))
        latencies.append(time.perf_counter() - started)
    return latencies


async def concurrent(refs: list[AggregateRef[Any]]) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def caller(ref: AggregateRef[Any]) -> None:
        for _ in range(PER_CALLER):
            started = time.perf_counter()
            await ref.ask(Deposit(1))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with anyio.create_task_group() as task_group:
        for ref in refs:
            task_group.start_soon(caller, ref)
    return latencies, len(latencies) / (time.perf_counter() - started)


def quantiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return cuts[49] * 1e6, cuts[98] * 1e6


async def main(rounds: int, same_process: bool) -> None:
    owners: dict[int, Owner] = {}
    async with contextlib.AsyncExitStack() as stack:
        process = None
        if same_process:
            _, _, owner_server = await stack.enter_async_context(member("owner", owners))
            owners[1] = Owner("owner", owner_server.address, 1)
        else:
            process = await stack.enter_async_context(
                await anyio.open_process([sys.executable, __file__, "--serve"])
            )
            assert process.stdout is not None
            line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 200)
            address = line.decode().strip()
            owners[1] = Owner("owner", address, 1)
        runtime, routed, server = await stack.enter_async_context(member("caller", owners))
        owners[0] = Owner("caller", server.address, 1)

        def refs(shard: int, count: int, prefix: str) -> list[AggregateRef[Any]]:
            decider = runtime.ref(BenchAccount, "warm-up").decider
            return [
                AggregateRef(routed, decider, aggregate_id, f"BenchAccount-{aggregate_id}")
                for aggregate_id in ids_in(shard, count, prefix)
            ]

        results: dict[str, list[tuple[float, ...]]] = {}
        for round_ in range(rounds):
            for name, shard in (("local", 0), ("routed", 1)):
                one = refs(shard, 1, f"s{round_}-")
                await one[0].ask(Deposit(0))  # activated, connection made
                p50, p99 = quantiles(await sequential(one))
                many = refs(shard, CONCURRENT, f"c{round_}-")
                for ref in many:
                    await ref.ask(Deposit(0))
                latencies, rate = await concurrent(many)
                c50, c99 = quantiles(latencies)
                results.setdefault(name, []).append((p50, p99, c50, c99, rate))
                print(
                    f"round {round_ + 1} {name:6}: 1 caller p50 {p50:7.0f} us p99 {p99:7.0f} us"
                    f" | {CONCURRENT} callers p50 {c50:7.0f} us p99 {c99:7.0f} us"
                    f" {rate:8.0f} asks/s",
                    flush=True,
                )
        print("medians over rounds:")
        for name, rows in results.items():
            columns = [statistics.median(column) for column in zip(*rows, strict=True)]
            print(
                f"  {name:6}: 1 caller p50 {columns[0]:.0f} us p99 {columns[1]:.0f} us | "
                f"{CONCURRENT} callers p50 {columns[2]:.0f} us p99 {columns[3]:.0f} us "
                f"{columns[4]:.0f} asks/s"
            )
        if process is not None:
            assert process.stdin is not None
            await process.stdin.aclose()  # the owner stops
            await process.wait()


if __name__ == "__main__":
    if "--serve" in sys.argv:
        asyncio.run(serve_owner())
    else:
        numbers = [int(a) for a in sys.argv[1:] if a.isdigit()]
        asyncio.run(main(numbers[0] if numbers else 3, "--same-process" in sys.argv))
