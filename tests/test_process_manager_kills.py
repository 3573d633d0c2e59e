"""The order fulfilment saga under SIGKILL: a real process runs it and is killed at random
moments, over and over; a last one finishes. Every order must end consistently, with no command
applied twice and none lost, checked on the stored events.

The saga process runs ``tests/workers/sagas.py``.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import anyio

from actorsource import EventStore, PostgresEventStore, Runtime, SQLiteEventStore
from examples.order_fulfilment import Order as ShopOrder
from examples.order_fulfilment import PlaceOrder, Restock, Warehouse

from .conftest import drop_schema, postgres_schema
from .test_processes import WORKER_TIMEOUT, Worker, _seed

ORDERS = 24
KILLS = 20
STOCK = 30  # less than the orders want: some are refused for want of stock
CARDS = ("ok", "declined", "3ds", "ok")  # "3ds" is never confirmed: it times out


async def seed(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Warehouse, "main").ask(Restock("book", STOCK))
        for n in range(ORDERS):
            order = PlaceOrder(str(n), "book", 1 + n % 3, 1000 + n, CARDS[n % len(CARDS)])
            await runtime.ref(ShopOrder, str(n)).ask(order)


async def _ended(store: EventStore) -> int:
    ended = 0
    for n in range(ORDERS):
        types = [stored.type async for stored in store.read_stream(f"Fulfilment-{n}")]
        ended += "FulfilmentEnded" in types
    return ended


async def run_with_kills(store: EventStore, db: str, *extra: str) -> None:
    rng = random.Random(_seed())
    for kill in range(KILLS):
        worker = Worker(db, *extra, stdin=True, module="tests.workers.sagas")
        try:
            await worker.wait_for_line(lambda line: line == "ready\n", f"kill {kill}")
            await anyio.sleep(rng.uniform(0, 0.4))  # a random moment, not a synchronization
        finally:
            worker.kill()
    last = Worker(db, *extra, stdin=True, module="tests.workers.sagas")
    try:
        with anyio.fail_after(WORKER_TIMEOUT):
            while await _ended(store) < ORDERS:
                # the other process's appends are found by polling
                await store.wait_for_events(await store.head_position(), 0.1)
        last.send("stop")
        assert await last.wait("stopping") == 0, last.stderr
    finally:
        last.kill()


async def check_consistent(store: EventStore) -> None:
    async with store:
        warehouse = [stored async for stored in store.read_stream("Warehouse-main")]
        reserved = Counter(e.data["order_id"] for e in warehouse if e.type == "StockReserved")
        released = Counter(e.data["order_id"] for e in warehouse if e.type == "StockReleased")
        assert max(reserved.values()) == 1, f"stock reserved twice: {reserved}"
        assert not released or max(released.values()) == 1, f"released twice: {released}"
        shipped_quantity = 0
        outcomes: Counter[str] = Counter()
        applied = await _applied_commands(store)
        for n in range(ORDERS):
            order_id = str(n)
            order = [e.type async for e in store.read_stream(f"Order-{n}")]
            payment = [e.type async for e in store.read_stream(f"Payment-{n}")]
            saga = [e async for e in store.read_stream(f"Fulfilment-{n}")]
            decided = [e.data["seq"] for e in saga if e.type == "CommandDecided"]
            answered = [e.data["seq"] for e in saga if e.type == "OutcomeReceived"]
            assert sorted(decided) == sorted(answered) == list(range(1, len(decided) + 1)), (
                f"Fulfilment-{n}: decided {decided}, outcomes {answered}"
            )
            assert [e.type for e in saga].count("FulfilmentEnded") == 1
            by_seq = {e.data["seq"]: e for e in saga if e.type == "OutcomeReceived"}
            for e in saga:
                if e.type != "CommandDecided":
                    continue
                # applied once (its events carry the id derived from the saga's stream and
                # version) if accepted, not at all if refused
                command_id = f"process:Fulfilment-{n}:{e.version}"
                refused = by_seq[e.data["seq"]].data["reason"] is not None
                assert applied[command_id] == (0 if refused else 1), (
                    f"{e.data} of Fulfilment-{n}: applied by {applied[command_id]} appends"
                )
            handled = [e.data["position"] for e in saga if e.type == "EventHandled"]
            assert len(handled) == len(set(handled)), f"Fulfilment-{n} handled an event twice"
            assert payment.count("PaymentCharged") <= 1
            if order == ["OrderPlaced", "OrderShipped"]:
                outcomes["shipped"] += 1
                assert reserved[order_id] == 1 and released[order_id] == 0
                assert payment.count("PaymentCharged") == 1
                shipped_quantity += 1 + n % 3
            else:
                assert order == ["OrderPlaced", "OrderCancelled"], f"Order-{n}: {order}"
                outcomes["cancelled"] += 1
                assert reserved[order_id] == released[order_id], f"Order-{n} kept its stock"
                assert "PaymentCharged" not in payment
                if CARDS[n % len(CARDS)] == "3ds" and reserved[order_id]:
                    assert payment == ["PaymentRequested", "PaymentCancelled"]
        final = await _stock(store)
        assert final == STOCK - shipped_quantity
        assert outcomes["shipped"] and outcomes["cancelled"]
        timers = store.capabilities().timers
        assert timers is not None
        assert await timers.list_timers() == []


async def _applied_commands(store: EventStore) -> Counter[str]:
    """How many appends each command id made (the events of one append share it)."""
    appends = {
        (e.stream_id, e.metadata.get("command_id"))
        async for e in store.read_all()
        if not e.stream_id.startswith("Fulfilment-")
    }
    return Counter(command_id for _, command_id in appends if command_id)


async def _stock(store: EventStore) -> int:
    stock = 0
    async for e in store.read_stream("Warehouse-main"):
        if e.type == "Restocked":
            stock += e.data["quantity"]
        elif e.type == "StockReserved":
            stock -= e.data["quantity"]
        elif e.type == "StockReleased":
            stock += e.data["quantity"]
    return stock


async def test_the_saga_ends_every_order_consistently_through_sigkills_on_sqlite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "saga.db"
    await seed(SQLiteEventStore(path))
    async with SQLiteEventStore(path) as store:
        await run_with_kills(store, str(path))
    await check_consistent(SQLiteEventStore(path))


async def test_the_saga_ends_every_order_consistently_through_sigkills_on_postgresql(
    tmp_path: Path, postgres_dsn: str
) -> None:
    schema = postgres_schema(tmp_path)
    try:
        await seed(PostgresEventStore(postgres_dsn, schema=schema))
        async with PostgresEventStore(postgres_dsn, schema=schema) as store:
            await run_with_kills(store, postgres_dsn, "--schema", schema)
        await check_consistent(PostgresEventStore(postgres_dsn, schema=schema))
    finally:
        await drop_schema(postgres_dsn, schema)
