"""What the stores' ``compress_over`` costs and saves.

Two measurements, each in alternating rounds (off, on, off, on, ...) so that both see the
same drift of a shared machine:

- W1 (1,000 aggregates, 1,000 callers, small events that are never compressed): what the
  per-event size check costs; prints commands/s per setting.
- large events (orders of ~15 KB of JSON, appended 20 a time): the database's size after a
  checkpoint, the append rate, and the rate of a ``read_all`` of them back.

Prints numbers, asserts nothing: ``python benchmarks/compression.py [rounds]``. With a
``postgresql://`` DSN after the rounds, both run on PostgreSQL instead (a fresh schema each
run, dropped afterwards; the size is the events table's with its TOAST and indexes, and the
data's own columns).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from actorsource import EventStore, NewEvent, PostgresEventStore, SQLiteEventStore
from actorsource.bench._common import Sizes
from actorsource.bench.workloads import workload_many

THRESHOLD = 4096


def _orders(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """Order documents: repeated keys, a vocabulary of words, prices; ~15 KB of JSON each."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(3000)
    ]
    return [
        {
            "order_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "customer": {
                "name": " ".join(rng.choices(words, k=3)),
                "address": " ".join(rng.choices(words, k=8)),
            },
            "lines": [
                {
                    "sku": f"SKU-{rng.randrange(10**6):06d}",
                    "name": " ".join(rng.choices(words, k=4)),
                    "description": " ".join(rng.choices(words, k=20)),
                    "quantity": rng.randint(1, 9),
                    "unit_price": round(rng.uniform(1, 500), 2),
                }
                for _ in range(60)
            ],
        }
        for _ in range(count)
    ]


async def _w1(directory: Path, compress_over: int | None) -> float:
    sizes = Sizes(w1_commands=50_000)
    store = SQLiteEventStore(directory / f"w1-{uuid.uuid4().hex}.db", compress_over=compress_over)
    result = await workload_many(store, sizes, lambda _: None, sequential=False)
    return float(result["commands_per_s"])


async def _large_postgres(
    dsn: str, compress_over: int | None, orders: list[dict[str, Any]]
) -> tuple[int, float, float, int]:
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store = PostgresEventStore(dsn, schema=schema, compress_over=compress_over)
    try:
        rates = await _append_and_read(store, orders)
        conn = await asyncpg.connect(dsn)
        try:
            size = await conn.fetchval(f"SELECT pg_total_relation_size('{schema}.events')")
            data = await conn.fetchval(
                "SELECT sum(coalesce(pg_column_size(data), 0) + "
                f"coalesce(pg_column_size(data_z), 0)) FROM {schema}.events"
            )
        finally:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            await conn.close()
    except BaseException:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
        raise
    return int(size), *rates, int(data)


async def _w1_postgres(dsn: str, compress_over: int | None) -> float:
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store = PostgresEventStore(dsn, schema=schema, compress_over=compress_over)
    try:
        result = await workload_many(
            store, Sizes(w1_commands=50_000), lambda _: None, sequential=False
        )
    finally:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
    return float(result["commands_per_s"])


async def _append_and_read(store: EventStore, orders: list[dict[str, Any]]) -> tuple[float, float]:
    async with store:
        started = time.perf_counter()
        for start in range(0, len(orders), 20):
            events = [
                NewEvent(str(uuid.uuid4()), "OrderPlaced", o, {})
                for o in orders[start : start + 20]
            ]
            await store.append(f"Order-{start}", 0, events)
        appended = time.perf_counter() - started
        started = time.perf_counter()
        count = sum([1 async for _ in store.read_all()])
        read = time.perf_counter() - started
        assert count == len(orders)
    return len(orders) / appended, len(orders) / read


async def _large(
    directory: Path, compress_over: int | None, orders: list[dict[str, Any]]
) -> tuple[int, float, float]:
    path = directory / f"large-{uuid.uuid4().hex}.db"
    async with SQLiteEventStore(path, compress_over=compress_over) as store:
        started = time.perf_counter()
        for start in range(0, len(orders), 20):
            events = [
                NewEvent(str(uuid.uuid4()), "OrderPlaced", o, {})
                for o in orders[start : start + 20]
            ]
            await store.append(f"Order-{start}", 0, events)
        appended = time.perf_counter() - started
        started = time.perf_counter()
        count = sum([1 async for _ in store.read_all()])
        read = time.perf_counter() - started
        assert count == len(orders)
    size = path.stat().st_size  # closing checkpointed the WAL into the file
    return size, len(orders) / appended, len(orders) / read


async def main_postgres(rounds: int, dsn: str) -> None:
    orders = _orders(2000)
    text = sum(len(str(o)) for o in orders)
    print(f"PostgreSQL, large events: {len(orders)} of ~{text // len(orders):,} characters")
    large: dict[str, list[tuple[int, float, float, int]]] = {"off": [], "on": []}
    w1: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for name, over in (("off", None), ("on", THRESHOLD)):
            w1[name].append(await _w1_postgres(dsn, over))
            large[name].append(await _large_postgres(dsn, over, orders))
    for name in ("off", "on"):
        label = "compress_over=None" if name == "off" else f"compress_over={THRESHOLD}"
        runs = large[name]
        rates = w1[name]
        print(
            f"{label}: W1 {statistics.median(rates):,.0f} commands/s "
            f"(runs {', '.join(f'{r:,.0f}' for r in rates)}); "
            f"large: events table {statistics.median(r[0] for r in runs) / 2**20:.1f} MiB "
            f"(data {statistics.median(r[3] for r in runs) / 2**20:.1f} MiB), "
            f"append {statistics.median(r[1] for r in runs):,.0f} events/s "
            f"(runs {', '.join(f'{r[1]:,.0f}' for r in runs)}), "
            f"read_all {statistics.median(r[2] for r in runs):,.0f} events/s "
            f"(runs {', '.join(f'{r[2]:,.0f}' for r in runs)})"
        )


async def main(rounds: int) -> None:
    orders = _orders(2000)
    text = sum(len(str(o)) for o in orders)
    print(f"large events: {len(orders)} of ~{text // len(orders):,} characters")
    w1: dict[str, list[float]] = {"off": [], "on": []}
    large: dict[str, list[tuple[int, float, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for _ in range(rounds):
            for name, over in (("off", None), ("on", THRESHOLD)):
                w1[name].append(await _w1(directory, over))
                large[name].append(await _large(directory, over, orders))
    for name in ("off", "on"):
        label = "compress_over=None" if name == "off" else f"compress_over={THRESHOLD}"
        rates = w1[name]
        sizes = [s for s, _, _ in large[name]]
        print(
            f"{label}: W1 {statistics.median(rates):,.0f} commands/s "
            f"(runs {', '.join(f'{r:,.0f}' for r in rates)}); "
            f"large: file {statistics.median(sizes) / 2**20:.1f} MiB, "
            f"append {statistics.median(a for _, a, _ in large[name]):,.0f} events/s, "
            f"read_all {statistics.median(r for _, _, r in large[name]):,.0f} events/s"
        )


if __name__ == "__main__":
    ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if len(sys.argv) > 2:
        asyncio.run(main_postgres(ROUNDS, sys.argv[2]))
    else:
        asyncio.run(main(ROUNDS))
