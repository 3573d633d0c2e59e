"""PostgreSQL's read-model transactions at the store: the connection work and inline hooks get,
its search_path, rollbacks, the checkpoint's lock between runners, and inline hooks fed from
the table (other stores' appends included)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped]
import pytest

from actorsource import CheckpointConflictError, PostgresEventStore, StoredEvent

from ..conftest import postgres_schema, run_sync
from .test_contract import event


@pytest.fixture
async def stores(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[list[PostgresEventStore]]:
    """Two open stores on one schema (as two processes would have), dropped afterwards."""
    schema = postgres_schema(tmp_path)
    try:
        async with (
            PostgresEventStore(postgres_dsn, schema=schema) as one,
            PostgresEventStore(postgres_dsn, schema=schema) as two,
        ):
            yield [one, two]
    finally:
        run_sync(_drop(postgres_dsn, schema))


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_work_gets_a_connection_whose_unqualified_tables_live_beside_the_events(
    stores: list[PostgresEventStore], postgres_dsn: str
) -> None:
    store = stores[0]

    async def work(conn: asyncpg.Connection) -> str:
        await conn.execute("CREATE TABLE balances (account text PRIMARY KEY, amount bigint)")
        await conn.execute("INSERT INTO balances VALUES ('a', 5)")
        return str(await conn.fetchval("SELECT current_setting('search_path')"))

    search_path = await store.commit_with_checkpoint("view", 3, work)

    assert search_path.startswith(f'"{store.schema}", ')  # then what it was ("$user", public)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        found = await conn.fetchval(f'SELECT amount FROM "{store.schema}".balances')
        in_public = await conn.fetchval("SELECT to_regclass('public.balances')")
        # the pooled connection went back to the pool with its own search_path
        assert (
            await conn.fetchval("SELECT current_setting('search_path')")
            == search_path[len(f'"{store.schema}", ') :]
        )
    finally:
        await conn.close()
    assert (found, in_public) == (5, None)
    assert await store.load_checkpoint("view") == 3


async def test_failing_async_work_rolls_back_its_writes_and_raises_its_own_error(
    stores: list[PostgresEventStore], postgres_dsn: str
) -> None:
    store = stores[0]
    await store.commit_with_checkpoint(
        "view", 1, lambda conn: conn.execute("CREATE TABLE t (n int)")
    )
    cause = KeyError("the cause")

    async def write_then_fail(conn: asyncpg.Connection) -> None:
        await conn.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("handler failed after writing") from cause

    with pytest.raises(RuntimeError, match="after writing") as raised:
        await store.commit_with_checkpoint("view", 5, write_then_fail)

    assert raised.value.__cause__ is cause  # raised as the work raised it
    assert await store.load_checkpoint("view") == 1
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval(f'SELECT count(*) FROM "{store.schema}".t') == 0
    finally:
        await conn.close()


async def test_a_second_runner_waits_for_the_first_then_finds_the_checkpoint_moved(
    stores: list[PostgresEventStore], postgres_dsn: str
) -> None:
    one, two = stores
    inside = anyio.Event()
    release = anyio.Event()
    ran: list[str] = []

    async def first(_conn: Any) -> None:
        ran.append("first")
        inside.set()
        await release.wait()

    async def second(_conn: Any) -> None:
        ran.append("second")

    outcome: list[BaseException] = []

    async def run_second() -> None:
        try:
            await two.commit_with_checkpoint("view", 10, second, expected=0)
        except CheckpointConflictError as exc:
            outcome.append(exc)

    watcher = await asyncpg.connect(postgres_dsn)
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: one.commit_with_checkpoint("view", 10, first, expected=0))
                await inside.wait()
                tg.start_soon(run_second)
                await _until_a_transaction_waits_for_a_lock(watcher)
                release.set()
    finally:
        await watcher.close()

    assert ran == ["first"]  # the second's work never ran: no batch applied twice
    assert len(outcome) == 1
    error = outcome[0]
    assert isinstance(error, CheckpointConflictError)
    assert (error.expected, error.actual) == (0, 10)
    assert await one.load_checkpoint("view") == 10


async def _until_a_transaction_waits_for_a_lock(watcher: asyncpg.Connection) -> None:
    """Return once the server shows a transaction waiting on a lock of the checkpoints table
    (the only way to see the second runner blocked: it is inside PostgreSQL)."""
    for _ in range(2000):
        if await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE '%checkpoints%'"
        ):
            return
        await anyio.sleep(0.01)
    raise AssertionError("no transaction waited for the checkpoint's lock")


async def test_an_async_inline_hook_is_fed_every_event_after_its_checkpoint_once(
    stores: list[PostgresEventStore],
) -> None:
    one, two = stores
    await one.append("Account-1", 0, [event("Opened")])
    seen: list[tuple[int, str]] = []
    paths: set[str] = set()

    async def hook(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
        paths.add(await conn.fetchval("SELECT current_setting('search_path')"))
        assert conn.is_in_transaction()
        seen.extend((e.position, e.type) for e in events)

    await one.add_inline_projection("inline", hook)
    assert seen == [(1, "Opened")]  # caught up when added

    await two.append("Account-2", 0, [event("Opened")])  # another process: no hook there
    await one.append("Account-1", 1, [event("Deposited"), event("Deposited")])
    one.remove_inline_projection("inline")
    await one.append("Account-1", 3, [event("Closed")])

    assert seen == [(1, "Opened"), (2, "Opened"), (3, "Deposited"), (4, "Deposited")]
    assert await one.load_checkpoint("inline") == 4
    assert all(p.startswith(f'"{one.schema}", ') for p in paths)
