"""Read models in PostgreSQL's transactions: exactly-once batches and inline projections whose
handlers write through ``ctx.transaction`` (an asyncpg connection), crashes between handler and
checkpoint, failures that roll back, rebuilds, and the refusal of async handlers elsewhere."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import asyncpg  # type: ignore[import-untyped]
import attrs
import pytest

from actorsource import (
    DefinitionError,
    InMemoryEventStore,
    PostgresEventStore,
    Projection,
    ProjectionContext,
    ProjectionError,
    ResetContext,
    Runtime,
    SQLiteEventStore,
    StoreCapabilities,
    handle,
)

from .conftest import postgres_schema, run_sync
from .domain import Account, Deposit, Deposited

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def schema(postgres_dsn: str, tmp_path: Path) -> Iterator[str]:
    """The test's own schema, dropped afterwards."""
    name = postgres_schema(tmp_path)
    yield name
    run_sync(_drop(postgres_dsn, name))


async def _drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _query(dsn: str, sql: str, *args: object) -> list[Any]:
    """Run a statement on a connection of its own (what another process would see)."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _deposits(runtime: Runtime, count: int, accounts: int = 5) -> int:
    position = 0
    for n in range(count):
        recorded = await runtime.ref(Account, f"acc-{n % accounts}").ask(Deposit(1))
        position = recorded[-1].position
    return position


# -- exactly once ------------------------------------------------------------------------------


class Balances(Projection):
    """Exactly once, async, in an unqualified table: it lives in the store's schema."""

    mode: ClassVar[Any] = "exactly_once"
    #: the position whose handler fails (until cleared: a fix deployed)
    poison: int | None = None

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext[asyncpg.Connection]) -> None:
        conn = ctx.transaction
        await conn.execute(
            "INSERT INTO balances (account, amount, txid) VALUES ($1, $2, txid_current()) "
            "ON CONFLICT (account) DO UPDATE SET amount = balances.amount + excluded.amount, "
            "txid = excluded.txid",
            ctx.record.stream_id,
            event.amount,
        )
        await conn.execute(
            "INSERT INTO seen (position, txid) VALUES ($1, txid_current())", ctx.record.position
        )
        if ctx.record.position == self.poison:
            raise ValueError(f"cannot take position {self.poison}")

    async def reset(self, ctx: ResetContext[asyncpg.Connection]) -> None:
        await ctx.transaction.execute("TRUNCATE balances, seen")


_TABLES = (
    "CREATE TABLE {s}.balances (account text PRIMARY KEY, amount bigint, txid bigint)",
    "CREATE TABLE {s}.seen (position bigint, txid bigint)",
)


async def _tables(store: PostgresEventStore) -> None:
    """Make the read model's tables in the store's schema (through the store's own work)."""

    async def create(conn: asyncpg.Connection) -> None:
        for sql in _TABLES:
            await conn.execute(sql.format(s=f'"{store.schema}"'))

    await store.commit_with_checkpoint("tables", 0, create)


async def test_exactly_once_async_handlers_commit_each_batch_with_its_checkpoint(
    postgres_dsn: str, schema: str
) -> None:
    store = PostgresEventStore(postgres_dsn, schema=schema)
    async with Runtime(store) as runtime:
        await _tables(store)
        head = await _deposits(runtime, 30)
        runtime.add_projection(Balances(), batch_size=10)
        await runtime.wait_for_projection(Balances, head)

    s = f'"{schema}"'
    balances = await _query(postgres_dsn, f"SELECT account, amount FROM {s}.balances")
    assert dict(map(tuple, balances)) == {f"Account-acc-{n}": 6 for n in range(5)}
    seen = await _query(postgres_dsn, f"SELECT position, txid FROM {s}.seen ORDER BY position")
    assert [row[0] for row in seen] == list(range(1, 31))  # each event once
    batches = Counter(row[1] for row in seen)
    assert sorted(batches.values()) == [10, 10, 10]  # one transaction per batch, not per event
    checkpoint = await _query(
        postgres_dsn, f"SELECT position FROM {s}.checkpoints WHERE name = 'Balances'"
    )
    assert checkpoint[0][0] == 30


async def test_a_failing_handler_rolls_back_its_batch_writes_and_checkpoint_together(
    postgres_dsn: str, schema: str
) -> None:
    store = PostgresEventStore(postgres_dsn, schema=schema)
    s = f'"{schema}"'
    async with Runtime(store) as runtime:
        await _tables(store)
        head = await _deposits(runtime, 12)
        projection = Balances()
        projection.poison = 7
        runtime.add_projection(projection, batch_size=5)
        with pytest.raises(TimeoutError):
            await runtime.wait_for_projection(Balances, head, timeout=0.5)
        status = runtime.statistics().projections[0]
        assert (status.state, status.position) == ("failing", 5)
        assert status.last_error is not None
        assert "cannot take position 7" in status.last_error
        # 6 and 7 were written in the failed batch's transaction: rolled back with it
        seen = await _query(postgres_dsn, f"SELECT position FROM {s}.seen ORDER BY position")
        assert [row[0] for row in seen] == [1, 2, 3, 4, 5]
        assert await store.load_checkpoint("Balances") == 5

        projection.poison = None  # the fix: it goes on from there by itself
        await runtime.wait_for_projection(Balances, head)

    seen = await _query(postgres_dsn, f"SELECT position FROM {s}.seen ORDER BY position")
    assert [row[0] for row in seen] == list(range(1, 13))


async def test_an_async_reset_rebuilds_the_tables_to_what_a_fresh_run_gives(
    postgres_dsn: str, schema: str
) -> None:
    store = PostgresEventStore(postgres_dsn, schema=schema)
    s = f'"{schema}"'
    async with Runtime(store) as runtime:
        await _tables(store)
        head = await _deposits(runtime, 10)
        runtime.add_projection(Balances(), batch_size=4)
        await runtime.wait_for_projection(Balances, head)
        await _query(postgres_dsn, f"UPDATE {s}.balances SET amount = 999")  # gone wrong

        await runtime.rebuild_projection(Balances)
        await runtime.wait_for_projection(Balances, head)

    balances = await _query(postgres_dsn, f"SELECT account, amount FROM {s}.balances")
    assert dict(map(tuple, balances)) == {f"Account-acc-{n}": 2 for n in range(5)}
    seen = await _query(postgres_dsn, f"SELECT count(*) FROM {s}.seen")
    assert seen[0][0] == 10


# -- crashes between the handler and the checkpoint --------------------------------------------


def _project(dsn: str, schema: str, mode: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.workers.projector", dsn, mode, "--schema", schema, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("mode", "redelivered"),
    # batches of 10: the SIGKILL at 25 comes after the checkpoint at 20, so the at-least-once
    # projection handles 21..25 again; the exactly-once one lost them with its transaction
    [("at_least_once", 5), ("exactly_once", 0)],
)
async def test_a_sigkill_between_handler_and_checkpoint_redelivers_only_at_least_once(
    postgres_dsn: str, schema: str, mode: str, redelivered: int
) -> None:
    store = PostgresEventStore(postgres_dsn, schema=schema)
    async with Runtime(store) as runtime:
        await _deposits(runtime, 50)
    await _query(postgres_dsn, f'CREATE TABLE "{schema}".seen (position bigint)')

    killed = _project(postgres_dsn, schema, mode, "--crash-at", "25", "--batch-size", "10")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = _project(postgres_dsn, schema, mode, "--batch-size", "10")
    assert finished.returncode == 0, finished.stderr

    rows = await _query(postgres_dsn, f'SELECT position FROM "{schema}".seen')
    seen = Counter(row[0] for row in rows)
    assert sorted(seen) == list(range(1, 51))  # nothing lost
    assert sum(count - 1 for count in seen.values()) == redelivered
    assert {p for p, count in seen.items() if count > 1} == (
        set(range(21, 26)) if redelivered else set()
    )


# -- inline: read-your-writes ------------------------------------------------------------------


class InlineBalances(Projection):
    """Inline, async, in the store's schema: up to date when ``ask`` returns."""

    mode: ClassVar[Any] = "inline"

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext[asyncpg.Connection]) -> None:
        if event.amount == 666:
            raise ValueError("refusing 666")
        await ctx.transaction.execute(
            "INSERT INTO balances (account, amount) VALUES ($1, $2) ON CONFLICT (account) "
            "DO UPDATE SET amount = balances.amount + excluded.amount",
            ctx.record.stream_id,
            event.amount,
        )


async def test_an_inline_sql_read_model_is_up_to_date_when_ask_returns(
    postgres_dsn: str, schema: str
) -> None:
    store = PostgresEventStore(postgres_dsn, schema=schema)
    s = f'"{schema}"'
    async with Runtime(store) as runtime:
        await _tables(store)
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(2))  # before the projection: caught up when it starts
        runtime.add_projection(InlineBalances())
        await runtime.wait_for_projection(InlineBalances)

        for amount in (3, 4):
            await ref.ask(Deposit(amount))
            # read on another connection, as a web request would: no waiting
            found = await _query(
                postgres_dsn, f"SELECT amount FROM {s}.balances WHERE account = 'Account-a'"
            )
            assert found[0][0] == sum(range(2, amount + 1))

        with pytest.raises(ProjectionError, match="refusing 666"):
            await ref.ask(Deposit(666))
        assert await store.stream_version("Account-a") == 3  # nothing of it stored
        await ref.ask(Deposit(1))

    found = await _query(postgres_dsn, f"SELECT amount FROM {s}.balances")
    assert found[0][0] == 10
    assert await _checkpoint(postgres_dsn, schema, "InlineBalances") == 4


async def _checkpoint(dsn: str, schema: str, name: str) -> int:
    rows = await _query(dsn, f'SELECT position FROM "{schema}".checkpoints WHERE name = $1', name)
    return int(rows[0][0])


async def test_concurrent_asks_with_one_refused_by_an_inline_handler_fail_only_that_ask(
    postgres_dsn: str, schema: str
) -> None:
    store = PostgresEventStore(postgres_dsn, schema=schema)
    s = f'"{schema}"'
    async with Runtime(store) as runtime:
        await _tables(store)
        runtime.add_projection(InlineBalances())
        await runtime.wait_for_projection(InlineBalances)
        outcomes: dict[str, BaseException | None] = {}

        async def ask(account: str, amount: int) -> None:
            try:
                await runtime.ref(Account, account).ask(Deposit(amount))
            except ProjectionError as exc:
                outcomes[account] = exc
            else:
                outcomes[account] = None

        async with anyio.create_task_group() as tg:  # in one writer batch, most of them
            for n in range(20):
                tg.start_soon(ask, f"acc-{n}", 666 if n == 7 else 1)

    assert [a for a, error in outcomes.items() if error is not None] == ["acc-7"]
    rows = await _query(postgres_dsn, f"SELECT account, amount FROM {s}.balances")
    assert dict(map(tuple, rows)) == {f"Account-acc-{n}": 1 for n in range(20) if n != 7}
    assert await _query(postgres_dsn, f"SELECT count(*) FROM {s}.events") == [(19,)]


# -- where async handlers are refused ------------------------------------------------------


class AsyncExactly(Projection):
    mode: ClassVar[Any] = "exactly_once"

    @handle
    async def deposited(self, event: Deposited) -> None:
        pass


async def test_async_transactional_handlers_are_refused_only_where_transactions_are_not_async(
    tmp_path: Path,
) -> None:
    for store in (SQLiteEventStore(tmp_path / "events.db"), InMemoryEventStore()):
        with pytest.raises(DefinitionError, match=r"is async, but exactly_once handlers run"):
            Runtime(store).add_projection(AsyncExactly())
    # a PostgreSQL store awaits them inside its transaction (no connection needed to add one)
    Runtime(PostgresEventStore("postgresql:///unused")).add_projection(AsyncExactly())


class Untransactional(InMemoryEventStore):
    """Has the methods of a TransactionalStore, but does not declare them."""

    def capabilities(self) -> StoreCapabilities:
        return attrs.evolve(super().capabilities(), transactional=None)


async def test_a_store_that_declares_no_transactions_runs_no_exactly_once_projection() -> None:
    runtime = Runtime(Untransactional())
    with pytest.raises(DefinitionError, match=r"is exactly_once, .* use at_least_once"):
        runtime.add_projection(Balances())
