"""What SQLite's ``compress_over`` costs and saves.

Two measurements, each in alternating rounds (off, on, off, on, ...) so that both see the
same drift of a shared machine:

- W1 (1,000 aggregates, 1,000 callers, small events that are never compressed): what the
  per-event size check costs; prints commands/s per setting.
- large events (orders of ~15 KB of JSON, appended 20 a time): the database's size after a
  checkpoint, the append rate, and the rate of a ``read_all`` of them back.

Prints numbers, asserts nothing: ``python benchmarks/compression.py [rounds]``.
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

from actorsource import NewEvent, SQLiteEventStore
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
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
