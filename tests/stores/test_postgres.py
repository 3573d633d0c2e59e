"""What only the PostgreSQL store promises: gap-free positions under concurrent writers, JSONB,
LISTEN/NOTIFY across store objects, a versioned schema, clear connection errors.

These tests run on the server ``tests/conftest.py`` finds (``ACTORSOURCE_TEST_POSTGRES_DSN``, or
a throwaway one started from the installed PostgreSQL); each works in a schema of its own,
dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from actorsource import (
    ConcurrencyError,
    IncompatibleStoreError,
    NewEvent,
    PostgresEventStore,
    Runtime,
    SnapshotRecord,
    StoredEvent,
    StoreError,
    WaitTimeoutError,
)
from actorsource.stores.postgres import SCHEMA_VERSION

from ..conftest import drop_schema, postgres_schema, run_sync
from ..domain import Account, Deposit
from .test_contract import collect, event, everything, positions, versions


@pytest.fixture
def schema(postgres_dsn: str, tmp_path: Path) -> Iterator[str]:
    """A fresh schema name for the test, dropped afterwards."""
    name = postgres_schema(tmp_path)
    yield name
    run_sync(drop_schema(postgres_dsn, name))


@pytest.fixture
async def raw(postgres_dsn: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection to the test database."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(postgres_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def store_in(dsn: str, schema: str, **options: Any) -> PostgresEventStore:
    return PostgresEventStore(dsn, schema=schema, **options)


# -- positions: gap-free, in commit order ------------------------------------------------------


async def test_a_late_committing_append_holds_back_later_ones_so_no_reader_skips_it(
    postgres_dsn: str, schema: str, raw: Any
) -> None:
    """The sequence trap: with positions from a sequence, an append that took position 2 but
    committed after one that took 3 would be skipped by a reader that had already read 3."""
    async with store_in(postgres_dsn, schema) as writer, store_in(postgres_dsn, schema) as reader:
        await writer.append("Account-1", 0, [event()])
        # an appending transaction that does not commit yet, through the store's own function
        late = event(data={"late": True})
        transaction = raw.transaction()
        await transaction.start()
        first = await raw.fetchval(
            f'SELECT first_position FROM "{schema}".actorsource_append('
            "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            ["Late-1"],
            [1],
            [late.type],
            ['{"late": true}'],
            [None],
            ["{}"],
            [None],
            [late.event_id],
            ["Late-1"],
            [0],
            [],
            [],
            [],
            [],
            [],
            None,
            [],
        )
        assert first == 2  # it holds position 2, uncommitted
        try:
            # a concurrent append waits for the lock: it cannot take position 3 before 2 commits
            racing = asyncio.ensure_future(writer.append("Account-2", 0, [event()]))
            await asyncio.sleep(0.5)
            assert not racing.done()
            # so a reader sees only what is committed, and no higher position
            assert positions(await everything(reader)) == [1]
            assert await reader.head_position() == 1
        finally:
            await transaction.commit()
        result = await asyncio.wait_for(racing, 10)

    assert result.first_position == 3
    async with store_in(postgres_dsn, schema) as again:
        stored = await everything(again)
    assert positions(stored) == [1, 2, 3]
    assert [e.stream_id for e in stored] == ["Account-1", "Late-1", "Account-2"]


async def test_a_reader_following_several_writer_stores_never_skips_a_position(
    postgres_dsn: str, schema: str
) -> None:
    stores, appenders, appends = 4, 8, 15
    total = stores * appenders * appends * 2
    with anyio.fail_after(120):
        read, stored = await _follow_while_writing(postgres_dsn, schema, stores, appenders, appends)
    assert read == list(range(1, total + 1))
    for s in range(5):
        in_stream = [e for e in stored if e.stream_id == f"Account-{s}"]
        assert versions(in_stream) == list(range(1, len(in_stream) + 1))
    # every append kept its two events side by side
    by_position = {e.position: e for e in stored}
    for e in stored:
        if "n" in e.data:
            assert by_position[e.position + 1].version == e.version + 1


async def _follow_while_writing(
    postgres_dsn: str, schema: str, stores: int, appenders: int, appends: int
) -> tuple[list[int], list[StoredEvent]]:
    total = stores * appenders * appends * 2
    async with store_in(postgres_dsn, schema) as reader:
        writers = [store_in(postgres_dsn, schema, max_batch=7) for _ in range(stores)]
        read: list[int] = []
        done = anyio.Event()

        async def follow() -> None:
            # read on from the last position seen, as a subscription does: a position that
            # committed after a higher one was read would be missed for good
            while True:
                finished = done.is_set()
                batch = await collect(reader.read_all(len(read) + 1))
                read.extend(e.position for e in batch)
                if finished and len(read) >= total:
                    return
                with contextlib.suppress(WaitTimeoutError):  # a poll
                    await reader.wait_for_events(len(read), 0.05)

        async def append(store: PostgresEventStore, n: int) -> None:
            for i in range(appends):
                stream = f"Account-{n % 5}"
                await store.append(stream, None, [event(data={"n": n, "i": i}), event()])

        try:
            for store in writers:
                await store.open()
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                async with anyio.create_task_group() as writing:
                    for index, store in enumerate(writers):
                        for n in range(appenders):
                            writing.start_soon(append, store, index * appenders + n)
                done.set()
        finally:
            for store in writers:
                await store.close()
        return read, await everything(reader)


# -- batches ----------------------------------------------------------------------------------


async def test_concurrent_appends_share_transactions(postgres_dsn: str, schema: str) -> None:
    async with store_in(postgres_dsn, schema) as store:
        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(store.append, f"Account-{n}", 0, [event()])
        assert store.batches_committed < 200
        assert positions(await everything(store)) == list(range(1, 201))


async def test_conflicts_in_one_batch_fail_only_their_appends(
    postgres_dsn: str, schema: str
) -> None:
    async with store_in(postgres_dsn, schema) as store:
        await store.append("a", 0, [event()])
        futures = [
            store.submit_append("a", 1, [event(data={"won": True})]),
            store.submit_append("a", 1, [event()]),  # the first one moved the stream
            store.submit_append("b", 0, [event(), event()]),
            store.submit_append("a", 5, [event()]),
            store.submit_append("b", 2, [event(event_id="dup")]),
            store.submit_append("c", 0, [event(event_id="dup")]),  # id taken in this batch
        ]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)

        assert [type(o).__name__ for o in outcomes] == [
            "AppendResult",
            "ConcurrencyError",
            "AppendResult",
            "ConcurrencyError",
            "AppendResult",
            "StoreError",
        ]
        assert (outcomes[1].expected_version, outcomes[1].actual_version) == (1, 2)
        assert (outcomes[3].expected_version, outcomes[3].actual_version) == (5, 2)
        assert "'dup' is already stored" in str(outcomes[5])
        stored = await everything(store)
        assert positions(stored) == [1, 2, 3, 4, 5]
        assert [(e.stream_id, e.version) for e in stored] == [
            ("a", 1),
            ("a", 2),
            ("b", 1),
            ("b", 2),
            ("b", 3),
        ]


async def test_another_store_moving_a_stream_is_a_conflict_with_the_actual_version(
    postgres_dsn: str, schema: str
) -> None:
    async with store_in(postgres_dsn, schema) as one, store_in(postgres_dsn, schema) as other:
        await one.append("a", 0, [event()])  # one now believes "a" is at 1
        await other.append("a", 1, [event(), event()])

        with pytest.raises(ConcurrencyError) as caught:
            await one.append("a", 1, [event()])
        assert (caught.value.expected_version, caught.value.actual_version) == (1, 3)
        # no expected version: appended at the real head, not after the stale belief
        result = await one.append("a", None, [event()])
        assert result.version == 4
        # an expected version beyond the head is a conflict too, never a gap
        with pytest.raises(ConcurrencyError) as ahead:
            await other.append("a", 9, [event()])
        assert ahead.value.actual_version == 4
        assert versions(await collect(one.read_stream("a"))) == [1, 2, 3, 4]


async def test_an_append_the_server_refuses_fails_alone_in_its_batch(
    postgres_dsn: str, schema: str
) -> None:
    # a stream id too large for the (stream_id, version) index, and not compressible
    huge = "".join(uuid.uuid4().hex for _ in range(400))
    async with store_in(postgres_dsn, schema) as store:
        futures = [
            store.submit_append("a", 0, [event()]),
            store.submit_append(huge, 0, [event()]),
            store.submit_append("b", 0, [event()]),
        ]
        first, refused, third = await asyncio.gather(*futures, return_exceptions=True)

        assert isinstance(refused, StoreError)
        assert "nothing of it was stored" in str(refused)
        assert "ProgramLimitExceededError: index row" in str(refused)
        assert (first.version, third.version) == (1, 1)
        assert [e.stream_id for e in await everything(store)] == ["a", "b"]
        assert (await store.append("a", 1, [event()])).first_position == 3


async def test_snapshots_are_saved_with_the_writer(postgres_dsn: str, schema: str) -> None:
    async with store_in(postgres_dsn, schema) as store:
        await asyncio.gather(
            store.append("a", 0, [event()]),
            store.save_snapshot(SnapshotRecord("a", 1, {"v": "first"})),
            store.save_snapshot(SnapshotRecord("a", 1, {"v": "second"})),  # replaces it
        )
        loaded = await store.load_snapshot("a")
        assert loaded is not None and loaded.state == {"v": "second"}


# -- JSONB --------------------------------------------------------------------------------------


async def test_data_and_metadata_are_jsonb_that_sql_can_query(
    postgres_dsn: str, schema: str, raw: Any
) -> None:
    async with store_in(postgres_dsn, schema) as store:
        await store.append(
            "Order-1", 0, [event("Placed", {"total": 250, "lines": [{"sku": "A-1"}]}, {"u": 7})]
        )
        await store.append("Order-2", 0, [event("Placed", {"total": 10, "lines": []}, {"u": 8})])

    rows = await raw.fetch(
        f"SELECT stream_id, (data->>'total')::int AS total, metadata->'u' AS user_id "
        f'FROM "{schema}".events WHERE data @> $1::jsonb ORDER BY position',
        '{"lines": [{"sku": "A-1"}]}',
    )
    assert [tuple(r) for r in rows] == [("Order-1", 250, "7")]
    types = await raw.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = 'events' ORDER BY column_name",
        schema,
    )
    found = dict(tuple(r) for r in types)
    assert found["data"] == found["metadata"] == "jsonb"
    assert found["recorded_at"] == "timestamp with time zone"


@pytest.mark.parametrize(
    ("data", "jsonb_kept", "exact_kept"),
    [
        ({"amount": 1, "f": 0.5}, True, False),
        ({"big": 1e16}, True, True),  # numeric prints it as 10000000000000000, an int
        ({"zero": -0.0}, True, True),  # numeric has no negative zero
        ({"nul": "a\x00b"}, False, True),  # JSONB cannot hold NUL at all
        ({"text": "not a \\u0000 NUL"}, True, True),  # looks like one: kept both ways
        # the hex digits of ids ("...5e3...") are no exponent: no exact copy for them
        ({"command_id": "0195e3a0-7abc-7def-8123-4e5f6a7b8c9d", "n": 12}, True, False),
        ({"list": [2, 1e-7]}, True, True),  # an exponent inside a list
    ],
    ids=["plain", "exponent", "negative zero", "nul", "escaped backslash", "uuid", "in a list"],
)
async def test_values_jsonb_would_change_keep_their_exact_text(  # noqa: PLR0917
    postgres_dsn: str,
    schema: str,
    raw: Any,
    data: dict[str, Any],
    jsonb_kept: bool,
    exact_kept: bool,
) -> None:
    async with store_in(postgres_dsn, schema) as store:
        await store.append("a", 0, [event(data=data)])
        (stored,) = await everything(store)
        await store.save_snapshot(SnapshotRecord("a", 1, data))
        snapshot = await store.load_snapshot("a")

    # equal, with the same types, and -0.0 stays -0.0 (the order of keys is JSONB's)
    assert stored.data == data
    assert {k: repr(v) for k, v in stored.data.items()} == {k: repr(v) for k, v in data.items()}
    assert snapshot is not None
    assert {k: repr(v) for k, v in snapshot.state.items()} == {k: repr(v) for k, v in data.items()}
    row = await raw.fetchrow(
        f'SELECT data IS NOT NULL, data_text IS NOT NULL FROM "{schema}".events'
    )
    assert tuple(row) == (jsonb_kept, exact_kept)


# -- LISTEN/NOTIFY ------------------------------------------------------------------------------


async def test_a_commit_wakes_a_waiter_on_another_store_object_at_once(
    postgres_dsn: str, schema: str
) -> None:
    async with store_in(postgres_dsn, schema) as waiter, store_in(postgres_dsn, schema) as writer:
        woke = anyio.Event()

        async def wait() -> None:
            await waiter.wait_for_events(0, timeout=60)
            woke.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.1)
            assert not woke.is_set()
            started = anyio.current_time()
            await writer.append("Account-1", 0, [event()])
            with anyio.fail_after(5):  # far below the 60 s poll interval
                await woke.wait()
        assert anyio.current_time() - started < 5


async def test_a_lost_listening_connection_comes_back(
    postgres_dsn: str, schema: str, raw: Any
) -> None:
    async with store_in(postgres_dsn, schema) as waiter, store_in(postgres_dsn, schema) as writer:
        lost = waiter._listener
        killed = await raw.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN %' AND query LIKE '%' || $1 || '%'",
            f"actorsource_{schema}",
        )
        assert killed == 2  # both stores listen
        with anyio.fail_after(10):  # noticed, and listening again
            while waiter._listener in (None, lost) or waiter._listener.is_closed():  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await writer.append("Account-1", 0, [event()])
        with anyio.fail_after(5):
            await waiter.wait_for_events(0, timeout=60)


# -- driver errors become StoreError at the store's edge -----------------------------------------


class BrokenConnections:
    """A pool whose every statement fails with ``error``: what a connection that broke
    mid-statement (a server restarting) gives."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[BrokenConnections]:
        yield self

    async def fetch(self, sql: str, *params: object) -> list[Any]:
        raise self.error


def _driver_failures() -> dict[str, Exception]:
    import asyncpg

    return {
        "InternalClientError": asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation is in progress"
        ),
        "ProtocolError": asyncpg.exceptions.ProtocolError("unexpected message"),
        "ConnectionDoesNotExistError": asyncpg.exceptions.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        ),
        "AdminShutdownError": asyncpg.exceptions.AdminShutdownError(
            "terminating connection due to administrator command"
        ),
        "ConnectionResetError": ConnectionResetError("reset by peer"),
    }


PUBLIC_READS: dict[str, Callable[[PostgresEventStore], Awaitable[object]]] = {
    "read_all": lambda store: collect(store.read_all()),
    "read_stream": lambda store: collect(store.read_stream("a")),
    "read_stream_data": lambda store: collect(store.read_stream_data("a")),
    "load_latest": lambda store: store.load_latest("a"),
    "load_snapshot": lambda store: store.load_snapshot("a"),
    "find_command_events": lambda store: store.find_command_events("a", ["c-1"]),
    "stream_version": lambda store: store.stream_version("a"),
    "stream_version at": lambda store: store.stream_version("a", at=datetime.now(UTC)),
    "head_position": lambda store: store.head_position(),
    "list_streams": lambda store: store.list_streams(),
    "list_checkpoints": lambda store: store.list_checkpoints(),
    "load_checkpoint": lambda store: store.load_checkpoint("view"),
    "save_checkpoint": lambda store: store.save_checkpoint("view", 1),
}


@pytest.mark.parametrize("call", PUBLIC_READS.values(), ids=PUBLIC_READS.keys())
async def test_every_driver_error_of_a_read_is_a_store_error_naming_it(
    postgres_dsn: str, schema: str, call: Callable[[PostgresEventStore], Awaitable[object]]
) -> None:
    async with store_in(postgres_dsn, schema) as store:
        await store.append("a", 0, [event()])
        pool = store._pool
        for name, error in _driver_failures().items():
            store._pool = BrokenConnections(error)  # type: ignore[assignment]
            try:
                with pytest.raises(StoreError, match=f"PostgreSQL at .* failed: {name}") as caught:
                    await call(store)
            finally:
                store._pool = pool
            assert caught.value.__cause__ is error
        assert versions(await everything(store)) == [1]  # the store goes on


async def test_a_driver_error_while_listening_again_is_retried(
    postgres_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncpg

    class FailsToListen:
        """A connection whose LISTEN fails as a connection broken mid-statement does."""

        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self.conn, name)

        async def add_listener(self, channel: str, callback: Callable[..., object]) -> None:
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 15; another operation is in progress"
            )

    async with store_in(postgres_dsn, schema) as waiter, store_in(postgres_dsn, schema) as writer:
        connect, relisten = waiter._connect, waiter._relisten
        failures = 1
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def connect_once_broken() -> Any:
            nonlocal failures
            conn = await connect()
            if failures:
                failures -= 1
                return FailsToListen(conn)
            return conn

        async def watched_relisten() -> None:
            try:
                await relisten()
            except BaseException as exc:
                finished.set_exception(exc)
                raise
            finished.set_result(None)

        waiter._connect = connect_once_broken  # type: ignore[method-assign]
        waiter._relisten = watched_relisten  # type: ignore[method-assign]
        assert waiter._listener is not None
        with caplog.at_level(logging.WARNING, logger="actorsource.stores.postgres"):
            waiter._listener.terminate()  # lost: the store listens again, failing once
            with anyio.fail_after(10):
                await finished
        assert failures == 0
        assert any("InternalClientError" in r.getMessage() for r in caplog.records)
        await writer.append("Account-1", 0, [event()])
        with anyio.fail_after(5):  # woken by the new listener, far below the poll interval
            await waiter.wait_for_events(0, timeout=60)


async def test_the_writer_reconnects_after_its_connection_is_killed(
    postgres_dsn: str, schema: str, raw: Any
) -> None:
    async with store_in(postgres_dsn, schema) as store:
        await store.append("a", 0, [event()])
        assert store._writer is not None
        pid = await store._writer.fetchval("SELECT pg_backend_pid()")
        await raw.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        # the dead connection fails at most one batch, saying so; then the store goes on
        try:
            await store.append("a", 1, [event()])
        except StoreError as exc:
            assert "PostgreSQL" in str(exc)
        head = await store.stream_version("a")
        result = await store.append("a", head, [event()])
        assert result.version == head + 1
        assert positions(await everything(store)) == list(range(1, head + 2))


# -- the schema ----------------------------------------------------------------------------------


async def test_the_schema_is_created_with_its_version_and_opened_again(
    postgres_dsn: str, schema: str, raw: Any
) -> None:
    async with store_in(postgres_dsn, schema) as store:
        await store.append("a", 0, [event()])
    version = await raw.fetchval(f'SELECT version FROM "{schema}".actorsource_schema')
    assert version == SCHEMA_VERSION
    async with store_in(postgres_dsn, schema) as again:
        assert positions(await everything(again)) == [1]
        assert (await again.append("a", 1, [event()])).first_position == 2


async def test_stores_opening_a_new_schema_at_once_all_open_it(
    postgres_dsn: str, schema: str
) -> None:
    async def open_and_append(n: int) -> None:
        async with store_in(postgres_dsn, schema, pool_size=1) as store:
            await store.append(f"s-{n}", 0, [event()])

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(open_and_append, n)
    async with store_in(postgres_dsn, schema) as store:
        assert positions(await everything(store)) == list(range(1, 7))


async def test_a_newer_schema_is_refused(postgres_dsn: str, schema: str, raw: Any) -> None:
    async with store_in(postgres_dsn, schema):
        pass
    await raw.execute(f'UPDATE "{schema}".actorsource_schema SET version = $1', SCHEMA_VERSION + 1)

    with pytest.raises(IncompatibleStoreError, match="newer than this version of actorsource"):
        async with store_in(postgres_dsn, schema):
            pass


async def test_a_schema_holding_foreign_tables_of_our_names_is_refused_and_untouched(
    postgres_dsn: str, schema: str, raw: Any
) -> None:
    await raw.execute(f'CREATE SCHEMA "{schema}"')
    await raw.execute(f'CREATE TABLE "{schema}".events (id int)')

    with pytest.raises(IncompatibleStoreError, match=r"not an actorsource store.*events"):
        async with store_in(postgres_dsn, schema):
            pass
    tables = await raw.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    assert [r[0] for r in tables] == ["events"]


# -- errors ------------------------------------------------------------------------------------


async def test_an_unreachable_server_is_a_one_line_store_error_without_the_password() -> None:
    pytest.importorskip("asyncpg")
    store = PostgresEventStore(
        "postgresql://someone:s3cret@127.0.0.1:1/nowhere", schema="x", connect_timeout=5
    )
    with pytest.raises(StoreError) as caught:
        await store.open()

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot connect to PostgreSQL at postgresql://someone:***@127.0.0.1:1"
    )
    assert "s3cret" not in message
    assert caught.value.__cause__ is not None
    assert not store.is_open


async def test_a_missing_database_is_named_in_the_error(postgres_dsn: str) -> None:
    parts = urlsplit(postgres_dsn)  # (geturl() would drop the empty host of postgresql:///db)
    missing = f"{parts.scheme}://{parts.netloc}/actorsource_no_such_database?{parts.query}"
    with pytest.raises(StoreError, match='database "actorsource_no_such_database" does not exist'):
        async with PostgresEventStore(missing):
            pass


def test_bad_arguments_are_refused_by_name() -> None:
    pytest.importorskip("asyncpg")
    with pytest.raises(ValueError, match="schema must be a lower-case identifier"):
        PostgresEventStore("postgresql:///db", schema="Tenant; DROP")
    with pytest.raises(ValueError, match="pool_size must be an int >= 1"):
        PostgresEventStore("postgresql:///db", pool_size=0)
    with pytest.raises(ValueError, match="dsn must be a non-empty str"):
        PostgresEventStore("")


async def test_text_that_postgresql_cannot_hold_is_refused_by_name(
    postgres_dsn: str, schema: str
) -> None:
    async with store_in(postgres_dsn, schema) as store:
        with pytest.raises(ValueError, match="an event type cannot hold NUL"):
            await store.append("a", 0, [NewEvent("id-1", "Bad\x00Type", {}, {})])
        with pytest.raises(ValueError, match=r"checkpoint name .* without NUL"):
            await store.save_checkpoint("view\x00", 1)
        assert await everything(store) == []


# -- with a runtime ---------------------------------------------------------------------------


async def test_two_runtimes_on_two_stores_hosting_one_aggregate_lose_nothing(
    postgres_dsn: str, schema: str
) -> None:
    first = Runtime(store_in(postgres_dsn, schema), max_conflict_retries=1000)
    second = Runtime(store_in(postgres_dsn, schema), max_conflict_retries=1000)
    amounts: list[int] = []

    async def ask(runtime: Runtime, amount: int) -> None:
        await runtime.ref(Account, "shared").ask(Deposit(amount))
        amounts.append(amount)

    async with first, second, anyio.create_task_group() as tg:
        for n in range(1, 101):
            tg.start_soon(ask, first if n % 2 else second, n)
    retried = first.statistics().conflicts_retried + second.statistics().conflicts_retried
    assert retried > 0, "the runtimes never raced: nothing was proved"

    async with store_in(postgres_dsn, schema) as store, Runtime(store) as runtime:
        stream = await collect(store.read_stream("Account-shared"))
        assert versions(stream) == list(range(1, 101))
        assert sorted(e.data["amount"] for e in stream) == sorted(amounts)
        assert (await runtime.ref(Account, "shared").state()).balance == sum(range(1, 101))
