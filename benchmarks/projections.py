"""Read-side benchmarks: projection catch-up rate and live delivery latency, on SQLite.

Run from the repository root (the default writes 1,000,000 events first, about a minute)::

    python benchmarks/projections.py [--events 1000000] [--live 2000] [--dir DIR] [--json]

- **catch-up**: a no-op projection (at-least-once, and exactly-once) reads the whole log from
  position 1 to the head; events/s. Baseline in the same run: a bare ``store.read_all`` over the
  same events (what reading and decoding cost without a projection); the projection's rate is
  reported as a ratio of it.
- **live**: one append at a time, each waited for until the projection's handler ran; latency
  from the append's return (just after its commit) to the handler, p50/p99/p99.9.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs

from actorsource import (
    NewEvent,
    Projection,
    ProjectionContext,
    Runtime,
    SQLiteEventStore,
    handle,
)
from actorsource.bench import percentile


@attrs.frozen
class Deposited:
    amount: int


class NoOp(Projection):
    name: ClassVar[str | None] = "noop"

    def __init__(self) -> None:
        self.handled = 0

    @handle
    def deposited(self, event: Deposited) -> None:
        self.handled += 1


class NoOpExactlyOnce(NoOp):
    name: ClassVar[str | None] = "noop-exactly-once"
    mode: ClassVar[Any] = "exactly_once"


class Timed(Projection):
    """Notes when each event reached the handler (the live-latency probe)."""

    name: ClassVar[str | None] = "timed"

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.waiters: dict[int, asyncio.Future[None]] = {}

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self.arrived[ctx.record.position] = time.perf_counter()
        waiter = self.waiters.pop(ctx.record.position, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _fill(store: SQLiteEventStore, events: int, progress: bool) -> None:
    """Append ``events`` Deposited events: 1,000 streams, 100 events per append, 64 at once."""
    per_append, streams = 100, 1000
    appends = events // per_append
    semaphore = asyncio.Semaphore(64)
    versions = [0] * streams

    async def one(index: int) -> None:
        stream = index % streams
        expected = versions[stream]
        versions[stream] += per_append
        batch = [
            NewEvent(f"{index}-{i}", "Deposited", {"amount": i}, {}) for i in range(per_append)
        ]
        async with semaphore:
            await store.append(f"Account-{stream}", expected, batch)

    started = time.perf_counter()
    for start in range(0, appends, 1000):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 1000, appends))))
        if progress:
            done = min(start + 1000, appends) * per_append
            rate = done / (time.perf_counter() - started)
            print(f"  wrote {done:,} events ({rate:,.0f}/s)", file=sys.stderr)


async def _read_all_rate(store: SQLiteEventStore) -> float:
    started = time.perf_counter()
    count = 0
    async for _ in store.read_all():
        count += 1
    return count / (time.perf_counter() - started)


async def _catch_up_rate(store: SQLiteEventStore, projection: NoOp, head: int) -> float:
    async with Runtime(store) as runtime:
        started = time.perf_counter()
        runtime.add_projection(projection, batch_size=1000)
        await runtime.wait_for_projection(projection, head, timeout=None)
        elapsed = time.perf_counter() - started
    assert projection.handled == head, (projection.handled, head)
    return head / elapsed


async def _live_latency(store: SQLiteEventStore, count: int) -> list[float]:
    probe = Timed()
    latencies: list[float] = []
    async with Runtime(store) as runtime:
        runtime.add_projection(probe)
        await runtime.wait_for_projection(probe, timeout=None)
        loop = asyncio.get_running_loop()
        for n in range(count):
            position = await store.head_position() + 1
            waiter: asyncio.Future[None] = loop.create_future()
            probe.waiters[position] = waiter
            result = await store.append(
                "Account-live", None, [NewEvent(f"live-{n}", "Deposited", {"amount": n}, {})]
            )
            committed = time.perf_counter()
            assert result.first_position == position
            await waiter
            latencies.append(max(probe.arrived[position] - committed, 0.0))
    return sorted(latencies)


async def run(events: int, live: int, directory: Path, progress: bool = True) -> dict[str, Any]:
    """Run both read-side benchmarks; return their results."""
    path = directory / "read_side_bench.db"
    for suffix in ("", "-wal", "-shm"):  # a fresh file, as every benchmark starts from
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240  # before any I/O starts
    async with SQLiteEventStore(path) as store:
        await _fill(store, events, progress)
        head = await store.head_position()
        baseline = await _read_all_rate(store)
        at_least_once = await _catch_up_rate(store, NoOp(), head)
        exactly_once = await _catch_up_rate(store, NoOpExactlyOnce(), head)
        latencies = await _live_latency(store, live)
    return {
        "events": head,
        "read_all_events_per_s": round(baseline),
        "catch_up_events_per_s": round(at_least_once),
        "catch_up_vs_read_all": round(at_least_once / baseline, 3),
        "exactly_once_catch_up_events_per_s": round(exactly_once),
        "live_deliveries": len(latencies),
        "live_latency_ms": {
            "p50": round(percentile(latencies, 0.5) * 1000, 3),
            "p99": round(percentile(latencies, 0.99) * 1000, 3),
            "p99.9": round(percentile(latencies, 0.999) * 1000, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--live", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.dir or Path(scratch)
        results = asyncio.run(run(args.events, args.live, directory))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        latency = results["live_latency_ms"]
        print(f"events in the log            {results['events']:>12,}")
        print(f"read_all (baseline)          {results['read_all_events_per_s']:>12,} events/s")
        print(
            f"catch-up, no-op, at least once {results['catch_up_events_per_s']:>10,} events/s "
            f"({results['catch_up_vs_read_all']:.0%} of read_all)"
        )
        print(
            f"catch-up, no-op, exactly once  {results['exactly_once_catch_up_events_per_s']:>10,}"
            " events/s"
        )
        print(
            f"live delivery (commit -> handler, {results['live_deliveries']} appends): "
            f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, p99.9 {latency['p99.9']} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
