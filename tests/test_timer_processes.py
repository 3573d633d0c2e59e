"""Two OS processes delivering the timers of one SQLite file, or one PostgreSQL schema: every
due timer is delivered once, also when one of them is SIGKILLed holding claims on ticks it
delivered but did not mark done.

The delivering processes run ``tests/workers/timers.py``; the test counts the effects (the
``Ticked`` events) in the store.
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio

from actorsource import EventStore, PostgresEventStore, Runtime, SQLiteEventStore

from .conftest import drop_schema, postgres_schema
from .test_processes import Worker, _seed
from .timer_domain import Order, TickLater

#: one-shot timers seeded, one per order
TIMERS = 40


async def seed(store: EventStore) -> None:
    """Schedule one tick per order, due over the next few seconds (the workers start meanwhile)."""
    async with Runtime(store) as runtime:
        for n in range(TIMERS):
            await runtime.ref(Order, str(n)).ask(TickLater(seconds=1.0 + n * 0.05))


async def deliver_with_a_kill(db: str, *extra: str) -> None:
    """Run two delivering workers; SIGKILL one once it holds claims on delivered ticks; let
    the other deliver everything."""
    args = [db, *extra, "--lease", "2", "--poll", "0.05", "--max-claim", "3"]
    stalling = Worker(*args, "--stall-after", "4", stdin=True, module="tests.workers.timers")
    other = Worker(*args, stdin=True, module="tests.workers.timers")
    try:
        for worker in (stalling, other):
            await worker.wait_for_line(lambda line: line == "ready\n", "starting")
        await stalling.wait_for_line(lambda line: line.startswith("stalled"), "stalling")
        stalling.kill()  # mid-claim: it delivered ticks it had not marked done
        claimed = _owners(stalling.output, "claimed")
        finished = _owners(stalling.output, "finished")
        held = claimed - finished
        assert held, "the stalled worker held no claim when it was killed"
        everyone = {f"Order-{n}" for n in range(TIMERS)}
        while finished != everyone:
            line = await other.wait_for_line(
                lambda line: line.startswith("finished"), f"waiting for {everyone - finished}"
            )
            finished.add(line.split()[1])
        assert held <= _owners(other.output, "claimed"), "the held ticks were not claimed again"
        other.send("stop")
        assert await other.wait("stopping") == 0, other.stderr
    finally:
        stalling.kill()
        other.kill()


async def deliver_with_random_kills(
    store: EventStore, db: str, *extra: str, kills: int = 3
) -> None:
    """Start a delivering worker and SIGKILL it at a random moment after its first claim,
    ``kills`` times over; then let a last one deliver everything that is left."""
    rng = random.Random(_seed())
    args = [db, *extra, "--lease", "1", "--poll", "0.05", "--max-claim", "2"]
    for kill in range(kills):
        worker = Worker(*args, stdin=True, module="tests.workers.timers")
        try:
            await worker.wait_for_line(lambda line: line.startswith("claimed"), f"kill {kill}")
            await anyio.sleep(rng.uniform(0, 0.3))  # a random moment, not a synchronization
        finally:
            worker.kill()
    last = Worker(*args, stdin=True, module="tests.workers.timers")
    try:
        # a killed worker may have marked a tick done without saying so: ask the store
        while await store.capabilities().timers.list_timers():  # type: ignore[union-attr]
            await last.wait_for_line(lambda line: line.startswith("finished"), "delivering")
        last.send("stop")
        assert await last.wait("stopping") == 0, last.stderr
    finally:
        last.kill()


def _owners(output: list[str], kind: str) -> set[str]:
    whole = [line for line in output if line.endswith("\n")]  # a cut last line was not written
    return {line.split()[1] for line in whole if line.startswith(kind + " ")}


async def check_each_tick_taken_once(store: EventStore) -> None:
    async with store:
        for n in range(TIMERS):
            types = [stored.type async for stored in store.read_stream(f"Order-{n}")]
            assert types == ["Ticked"], f"Order-{n} has {types}"
        timers = store.capabilities().timers
        assert timers is not None
        assert await timers.list_timers() == []


async def test_two_processes_on_one_sqlite_file_deliver_each_due_timer_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "timers.db"
    await seed(SQLiteEventStore(path))
    await deliver_with_a_kill(str(path))
    await check_each_tick_taken_once(SQLiteEventStore(path))


async def test_timers_survive_random_sigkills_of_their_deliverer_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "timers.db"
    await seed(SQLiteEventStore(path))
    async with SQLiteEventStore(path) as store:
        await deliver_with_random_kills(store, str(path))
    await check_each_tick_taken_once(SQLiteEventStore(path))


async def test_timers_survive_random_sigkills_of_their_deliverer_on_postgresql(
    tmp_path: Path, postgres_dsn: str
) -> None:
    schema = postgres_schema(tmp_path)
    try:
        await seed(PostgresEventStore(postgres_dsn, schema=schema))
        async with PostgresEventStore(postgres_dsn, schema=schema) as store:
            await deliver_with_random_kills(store, postgres_dsn, "--schema", schema)
        await check_each_tick_taken_once(PostgresEventStore(postgres_dsn, schema=schema))
    finally:
        await drop_schema(postgres_dsn, schema)


async def test_two_processes_on_one_postgresql_schema_deliver_each_due_timer_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    schema = postgres_schema(tmp_path)
    try:
        await seed(PostgresEventStore(postgres_dsn, schema=schema))
        await deliver_with_a_kill(postgres_dsn, "--schema", schema)
        await check_each_tick_taken_once(PostgresEventStore(postgres_dsn, schema=schema))
    finally:
        await drop_schema(postgres_dsn, schema)
