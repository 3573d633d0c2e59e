"""Read models across restarts and failures: where they start, how they are rebuilt, waits that
end, store failures retried, and several runners of one projection on one store."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from actorsource import (
    DefinitionError,
    EventStore,
    InMemoryEventStore,
    Projection,
    ProjectionContext,
    ResetContext,
    Runtime,
    RuntimeClosedError,
    SQLiteEventStore,
    StoredEvent,
    StoreError,
    WaitTimeoutError,
    handle,
)
from actorsource.stores.postgres import PostgresEventStore

from .conftest import POSTGRES_DSN, SKIP_WITHOUT_POSTGRES, postgres_schema
from .domain import Account, Deposit, Deposited


class Totals(Projection):
    """A durable read model kept "outside" the process: a dict the test hands over.

    Idempotent, as at-least-once handlers must be: a redelivered position is skipped.
    """

    durable = True

    def __init__(self, table: dict[str, int] | None = None) -> None:
        self.table: dict[str, int] = {} if table is None else table
        self.positions: set[int] = set()

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        if ctx.record.position in self.positions:
            return
        self.positions.add(ctx.record.position)
        key = ctx.record.stream_id
        self.table[key] = self.table.get(key, 0) + event.amount

    async def reset(self, ctx: ResetContext) -> None:
        self.table.clear()
        self.positions.clear()


class TotalsWithoutReset(Projection):
    durable = True
    name = "Totals"

    def __init__(self, table: dict[str, int] | None = None) -> None:
        self.table: dict[str, int] = {} if table is None else table

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        key = ctx.record.stream_id
        self.table[key] = self.table.get(key, 0) + event.amount


class Stuck(Projection):
    """Fails on every event: it never gets anywhere."""

    @handle
    def deposited(self, event: Deposited) -> None:
        raise ValueError("cannot take it")


async def _deposit(runtime: Runtime, *amounts: int, account: str = "a") -> int:
    position = 0
    for amount in amounts:
        position = (await runtime.ref(Account, account).ask(Deposit(amount)))[-1].position
    return position


# -- waits that end ----------------------------------------------------------------------------


async def test_a_wait_for_a_position_the_stored_checkpoint_passed_returns_after_a_restart(
    store: EventStore,
) -> None:
    table: dict[str, int] = {}
    async with Runtime(store) as runtime:
        runtime.add_projection(Totals(table))
        position = await _deposit(runtime, 1, 2)
        await runtime.wait_for_projection(Totals, position)

    async with Runtime(store) as runtime:
        runtime.add_projection(Totals(table))
        with anyio.fail_after(10):  # before the fix: loading the checkpoint woke no waiter
            await runtime.wait_for_projection(Totals, position)
            await runtime.wait_for_projection(Totals, 1)
    assert table == {"Account-a": 3}  # resumed, not delivered twice


async def test_a_wait_for_a_stored_position_returns_while_the_checkpoint_is_still_loading(
    tmp_path: Path,
) -> None:
    release = anyio.Event()
    loads: list[str] = []

    class SlowToLoad(SQLiteEventStore):
        async def load_checkpoint(self, name: str) -> int:
            loads.append(name)
            if len(loads) == 1:  # the projection's own load hangs (a slow database)
                await release.wait()
            return await super().load_checkpoint(name)

    path = tmp_path / "events.db"
    async with Runtime(SQLiteEventStore(path)) as runtime:
        runtime.add_projection(Totals())
        position = await _deposit(runtime, 1, 2)
        await runtime.wait_for_projection(Totals, position)

    async with Runtime(SlowToLoad(path)) as runtime:
        runtime.add_projection(Totals())
        await anyio.wait_all_tasks_blocked()
        assert runtime.statistics().projections[0].state == "loading"
        with anyio.fail_after(10):
            await runtime.wait_for_projection(Totals, position)
        release.set()
    assert loads == ["Totals", "Totals"]


async def test_a_wait_that_passes_its_deadline_says_where_the_projection_stood(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        position = await _deposit(runtime, 1)
        runtime.add_projection(Stuck())
        with pytest.raises(WaitTimeoutError) as raised:
            await runtime.wait_for_projection(Stuck, position, timeout=0.3)
    error = raised.value
    assert isinstance(error, TimeoutError)
    assert (error.target, error.reached, error.timeout) == (position, 0, 0.3)
    assert "projection 'Stuck' did not reach position 1 within 0.3 s" in str(error)
    assert "cannot take it" in str(error)  # why: the handler's error


async def test_leaving_the_runtime_wakes_a_waiter_with_runtime_closed_error(
    store: EventStore,
) -> None:
    failed: list[BaseException] = []
    runtime = Runtime(store)

    async def wait() -> None:
        try:
            await runtime.wait_for_projection(Stuck, timeout=None)
        except RuntimeClosedError as exc:
            failed.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, runtime:
            await _deposit(runtime, 1)
            runtime.add_projection(Stuck())
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            # left: the waiter, in a task of its own, is woken
    assert len(failed) == 1
    assert "closed while waiting for projection 'Stuck'" in str(failed[0])
    with pytest.raises(RuntimeClosedError):
        await runtime.wait_for_projection(Stuck)


async def test_a_bad_timeout_is_refused(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        runtime.add_projection(Stuck())
        with pytest.raises(ValueError, match="timeout must be > 0"):
            await runtime.wait_for_projection(Stuck, timeout=0)


# -- rebuilds that clear what they rebuild ------------------------------------------------------


async def test_a_durable_projection_is_rebuilt_in_place_through_its_reset(
    store: EventStore,
) -> None:
    table: dict[str, int] = {}
    async with Runtime(store) as runtime:
        projection = Totals(table)
        runtime.add_projection(projection)
        position = await _deposit(runtime, 1, 2, 3)
        await runtime.wait_for_projection(Totals, position)
        table["Account-a"] = 999  # the read model went wrong

        rebuilt = await runtime.rebuild_projection(Totals)
        await runtime.wait_for_projection(Totals, position)

        assert rebuilt is projection
        assert table == {"Account-a": 6}  # cleared, then every event once
        assert await store.load_checkpoint("Totals") == position


async def test_a_durable_projection_without_reset_is_not_rebuilt_in_place(
    store: EventStore,
) -> None:
    table: dict[str, int] = {}
    async with Runtime(store) as runtime:
        runtime.add_projection(TotalsWithoutReset(table))
        position = await _deposit(runtime, 1, 2)
        await runtime.wait_for_projection(TotalsWithoutReset, position)

        with pytest.raises(DefinitionError, match=r"durable .* has no reset\(self, ctx\)"):
            await runtime.rebuild_projection(TotalsWithoutReset)
        await _deposit(runtime, 4)
        await runtime.wait_for_projection(TotalsWithoutReset)

        assert table == {"Account-a": 7}  # nothing delivered twice
        assert await store.load_checkpoint("Totals") == position + 1

        # with a factory writing elsewhere it is rebuilt beside the serving one
        fresh_table: dict[str, int] = {}
        fresh = await runtime.rebuild_projection(
            TotalsWithoutReset, factory=lambda: TotalsWithoutReset(fresh_table)
        )
        assert fresh_table == {"Account-a": 7}
        assert runtime.projection(TotalsWithoutReset) is fresh
        # its rebuild's own checkpoint is gone (it would hold archiving back for ever)
        assert "TotalsWithoutReset:rebuild" not in await store.list_checkpoints()


class SQLTotals(Projection):
    """Exactly once, in a table of the store's own SQLite file."""

    mode: ClassVar[Any] = "exactly_once"

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        conn: sqlite3.Connection = ctx.transaction
        conn.execute("CREATE TABLE IF NOT EXISTS totals (account TEXT PRIMARY KEY, n INTEGER)")
        conn.execute(
            "INSERT INTO totals VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET n = n + ?",
            (ctx.record.stream_id, event.amount, event.amount),
        )

    def reset(self, ctx: ResetContext) -> None:
        ctx.transaction.execute("DROP TABLE IF EXISTS totals")


def _totals(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT account, n FROM totals").fetchall())


async def test_an_exactly_once_sql_read_model_is_rebuilt_to_what_a_fresh_run_gives(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with Runtime(SQLiteEventStore(path)) as runtime:
        runtime.add_projection(SQLTotals())
        position = await _deposit(runtime, 1, 2)
        await _deposit(runtime, 5, account="b")
        await runtime.wait_for_projection(SQLTotals)
        fresh = _totals(path)

        await runtime.rebuild_projection(SQLTotals)
        await runtime.wait_for_projection(SQLTotals)
        assert _totals(path) == fresh == {"Account-a": 3, "Account-b": 5}

        await runtime.rebuild_projection(SQLTotals, from_position=position + 1)
        await runtime.wait_for_projection(SQLTotals)
        assert _totals(path) == {"Account-b": 5}  # only what comes after from_position


class ResetsAsync(Projection):
    mode: ClassVar[Any] = "exactly_once"

    @handle
    def deposited(self, event: Deposited) -> None:
        pass

    async def reset(self, ctx: ResetContext) -> None:
        pass


class InMemoryInline(Projection):
    mode: ClassVar[Any] = "inline"
    durable = False

    @handle
    def deposited(self, event: Deposited) -> None:
        pass


async def test_definitions_a_durable_read_model_cannot_keep_are_refused() -> None:
    runtime = Runtime(InMemoryEventStore())
    with pytest.raises(DefinitionError, match="reset is async, but a exactly_once projection"):
        runtime.add_projection(ResetsAsync())
    with pytest.raises(DefinitionError, match="is inline and sets durable = False"):
        runtime.add_projection(InMemoryInline())


# -- store failures inside a projection ----------------------------------------------------------


class Failing:
    """Makes chosen store operations raise StoreError a given number of times."""

    def __init__(self) -> None:
        self.left: Counter[str] = Counter()
        self.raised: Counter[str] = Counter()
        #: the projection's status as each failure after the first found it
        self.statuses: list[str] = []
        self.runtime: Runtime | None = None

    def check(self, operation: str) -> None:
        task = asyncio.current_task()
        in_projection = task is not None and task.get_name().startswith("actorsource projection")
        if self.left[operation] <= 0 or not in_projection:
            return  # only the projection's own calls fail (not the test's, nor a waiter's)
        self.left[operation] -= 1
        self.raised[operation] += 1
        if self.raised[operation] > 1 and self.runtime is not None:
            self.statuses.extend(p.state for p in self.runtime.statistics().projections)
        msg = f"injected: {operation} failed (database restarting)"
        raise StoreError(msg)


def _failing_store(kind: str, tmp_path: Path, failing: Failing) -> EventStore:
    """A store of ``kind`` whose projection-facing reads and writes fail when told to."""
    base: type[Any] = {
        "memory": InMemoryEventStore,
        "sqlite": SQLiteEventStore,
        "postgres": PostgresEventStore,
    }[kind]

    class Flaky(base):  # type: ignore[misc]
        async def head_position(self) -> int:
            failing.check("head_position")
            return int(await super().head_position())

        async def load_checkpoint(self, name: str) -> int:
            failing.check("load_checkpoint")
            return int(await super().load_checkpoint(name))

        async def save_checkpoint(self, name: str, position: int) -> None:
            failing.check("save_checkpoint")
            await super().save_checkpoint(name, position)

        async def commit_with_checkpoint(self, *args: Any, **kwargs: Any) -> Any:
            failing.check("commit_with_checkpoint")
            return await super().commit_with_checkpoint(*args, **kwargs)

        async def read_all(self, *args: Any, **kwargs: Any) -> AsyncIterator[StoredEvent]:
            failing.check("read_all")
            async for event in super().read_all(*args, **kwargs):
                yield event

    if kind == "memory":
        return Flaky()
    if kind == "sqlite":
        return Flaky(tmp_path / "events.db")
    return Flaky(POSTGRES_DSN, schema=postgres_schema(tmp_path))


class ExactTotals(Totals):
    mode: ClassVar[Any] = "exactly_once"
    name = "ExactTotals"

    def reset(self, ctx: ResetContext) -> None:  # type: ignore[override]
        self.table.clear()
        self.positions.clear()


@pytest.mark.parametrize(
    ("projection", "operation"),
    [
        (Totals, "head_position"),
        (Totals, "read_all"),
        (Totals, "save_checkpoint"),
        (Totals, "load_checkpoint"),
        (ExactTotals, "commit_with_checkpoint"),
    ],
)
async def test_a_store_error_in_a_projection_is_retried_and_the_runtime_goes_on(
    store_kind: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    projection: type[Totals],
    operation: str,
) -> None:
    failing = Failing()
    store = _failing_store(store_kind, tmp_path, failing)
    async with store, Runtime(store) as runtime:
        failing.runtime = runtime
        position = await _deposit(runtime, 1, 2)
        failing.left[operation] = 3
        read_model = projection()
        runtime.add_projection(read_model)
        await runtime.wait_for_projection(projection, position, timeout=30)
        after = await _deposit(runtime, 4)  # the runtime is alive and well
        await runtime.wait_for_projection(projection, after, timeout=30)
        status = runtime.statistics().projections[0]

    assert failing.raised[operation] == 3
    assert read_model.table == {"Account-a": 7}
    assert "failing" in failing.statuses  # visible while it retried
    assert status.state != "failing"
    assert status.last_error is None
    retries = [r for r in caplog.records if r.message == "projection failed; retrying"]
    assert len(retries) == 3
    assert all(r.levelno == logging.ERROR for r in retries)
    assert "database restarting" in str(retries[0].exc_info[1] if retries[0].exc_info else "")


# -- several runners of one projection on one store -----------------------------------------


class CountingExactly(Projection):
    mode: ClassVar[Any] = "exactly_once"
    name = "Counting"

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self.seen.append(ctx.record.position)
        if ctx.transaction is not None:
            conn: sqlite3.Connection = ctx.transaction
            conn.execute("CREATE TABLE IF NOT EXISTS seen (position INTEGER)")
            conn.execute("INSERT INTO seen VALUES (?)", (ctx.record.position,))


class CountingInline(CountingExactly):
    mode: ClassVar[Any] = "inline"


class PostgresCountingExactly(CountingExactly):
    """The same on PostgreSQL: async, through the asyncpg connection of the transaction."""

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:  # type: ignore[override]
        self.seen.append(ctx.record.position)
        await ctx.transaction.execute("INSERT INTO seen VALUES ($1)", ctx.record.position)


class PostgresCountingInline(PostgresCountingExactly):
    mode: ClassVar[Any] = "inline"


_COUNTING = {
    ("exactly_once", False): CountingExactly,
    ("inline", False): CountingInline,
    ("exactly_once", True): PostgresCountingExactly,
    ("inline", True): PostgresCountingInline,
}


@pytest.mark.parametrize("mode", ["exactly_once", "inline"])
@pytest.mark.parametrize(
    "kind", ["memory", "sqlite", pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)]
)
async def test_two_runtimes_running_one_projection_on_one_store_apply_each_event_once(
    tmp_path: Path, kind: str, mode: str
) -> None:
    projection = _COUNTING[mode, kind == "postgres"]
    path = tmp_path / "events.db"
    schema = postgres_schema(tmp_path)
    shared = InMemoryEventStore()
    await shared.open()  # one store object that both runtimes use (they leave it open)

    def make() -> EventStore:
        if kind == "postgres":
            return PostgresEventStore(POSTGRES_DSN, schema=schema)
        return shared if kind == "memory" else SQLiteEventStore(path)

    async with Runtime(make()) as runtime:
        for n in range(300):
            await runtime.ref(Account, f"acc-{n % 7}").ask(Deposit(1))
        head = await runtime.store.head_position()
        if kind == "postgres":
            await _postgres(f'CREATE TABLE "{schema}".seen (position bigint)')

    committed: list[int] = []  # every handler call that was kept, from both runners
    first, second = make(), make()
    try:
        async with Runtime(first) as one, Runtime(second) as two:
            for runtime in (one, two):
                runtime.add_projection(projection(committed), batch_size=10)
            with anyio.fail_after(60):
                await one.wait_for_projection(projection, head, timeout=None)
                await two.wait_for_projection(projection, head, timeout=None)
            assert await one.store.load_checkpoint("Counting") == head
        if kind == "postgres":
            rows = [r[0] for r in await _postgres(f'SELECT position FROM "{schema}".seen')]
            assert sorted(rows) == list(range(1, head + 1))  # 300 rows, not 600
    finally:
        if kind == "postgres":
            await _postgres(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    if kind == "sqlite":
        with sqlite3.connect(path) as conn:
            rows = [row[0] for row in conn.execute("SELECT position FROM seen")]
        assert sorted(rows) == list(range(1, head + 1))  # 300 rows, not 600
    elif kind == "memory":
        assert sorted(committed) == list(range(1, head + 1))


async def _postgres(sql: str) -> list[Any]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


# -- names a store cannot hold ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad\udc80", "a\x00b", ""])
async def test_a_projection_name_no_store_can_hold_is_refused_when_added(
    store: EventStore, name: str
) -> None:
    class Named(Projection):
        @handle
        def deposited(self, event: Deposited) -> None:
            pass

    Named.name = name
    async with Runtime(store) as runtime:
        with pytest.raises(DefinitionError, match="name must be a non-empty str"):
            runtime.add_projection(Named())
        assert await _deposit(runtime, 1) == 1  # the runtime goes on
    assert await store.list_checkpoints() == {}


class FailsOnceAtThree(Projection):
    mode: ClassVar[Any] = "exactly_once"

    def __init__(self) -> None:
        self.handled: Counter[int] = Counter()
        self.failed = False

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        if ctx.record.position == 3 and not self.failed:
            self.failed = True
            raise RuntimeError("a passing failure")
        self.handled[ctx.record.position] += 1


async def test_an_exactly_once_handler_failing_in_a_batch_on_the_memory_store_repeats_no_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="actorsource.projection")
    store = InMemoryEventStore()
    async with Runtime(store) as runtime:
        for _ in range(5):
            await runtime.ref(Account, "a").ask(Deposit(1))
        runtime.add_projection(FailsOnceAtThree(), batch_size=5)
        await runtime.wait_for_projection(FailsOnceAtThree, 5)
        view = runtime.projection(FailsOnceAtThree)
    assert view.failed
    assert view.handled == dict.fromkeys(range(1, 6), 1)  # 1 and 2 were not handed over again
