"""What only the SQLite store promises: a durable file, group commit, refusing foreign files."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sqlite3
import stat
import uuid
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import actorsource.stores.sqlite.commit as commit_module
import actorsource.stores.sqlite.reads as reads_module
import actorsource.stores.sqlite.writer as writer_module
from actorsource import (
    AppendResult,
    CodecError,
    ConcurrencyError,
    IncompatibleStoreError,
    NewEvent,
    SnapshotRecord,
    SQLiteEventStore,
    StoredEvent,
    StoreError,
)
from actorsource.stores.sqlite import APPLICATION_ID, SCHEMA_VERSION


def event(data: dict[str, Any] | None = None, event_id: str | None = None) -> NewEvent:
    return NewEvent(event_id or str(uuid.uuid4()), "Deposited", data or {"amount": 1}, {})


async def collect(items: AsyncIterable[StoredEvent]) -> list[StoredEvent]:
    return [item async for item in items]


def fingerprint(path: Path) -> tuple[str, list[str]]:
    """The file's bytes and the directory's names: what refusing a file must leave unchanged."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(os.listdir(path.parent))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


# -- durability -----------------------------------------------------------------------------------


async def test_events_and_snapshots_survive_closing_and_reopening_the_file(db_path: Path) -> None:
    async with SQLiteEventStore(db_path) as store:
        await store.append("Account-1", 0, [event({"n": 1}), event({"n": 2})])
        await store.append("Account-2", 0, [event({"n": 3})])
        await store.save_snapshot(SnapshotRecord("Account-1", 2, {"balance": 2}, 4))
        before = await collect(store.read_all())

    async with SQLiteEventStore(db_path) as reopened:
        assert await collect(reopened.read_all()) == before
        assert await reopened.stream_version("Account-1") == 2
        snapshot = await reopened.load_snapshot("Account-1")
        assert snapshot is not None
        assert (snapshot.version, snapshot.state, snapshot.schema_version) == (
            2,
            {"balance": 2},
            4,
        )
        # the reopened store goes on where the file left off
        result = await reopened.append("Account-1", 2, [event()])
        assert (result.version, result.first_position) == (3, 4)


async def test_reads_page_through_more_rows_than_one_page(db_path: Path) -> None:
    async with SQLiteEventStore(db_path, read_page_size=3) as store:
        for n in range(4):
            await store.append("a", None, [event({"n": 2 * n}), event({"n": 2 * n + 1})])
            await store.append("b", None, [event()])

        in_stream = await collect(store.read_stream("a"))
        assert [e.version for e in in_stream] == list(range(1, 9))
        assert [e.data["n"] for e in in_stream] == list(range(8))
        assert [e.version for e in await collect(store.read_stream("a", 2, 7))] == list(range(2, 8))
        assert [e.position for e in await collect(store.read_all())] == list(range(1, 13))
        assert [e.position for e in await collect(store.read_all(4))] == list(range(4, 13))


async def test_reads_with_versions_beyond_64_bits_yield_nothing(db_path: Path) -> None:
    async with SQLiteEventStore(db_path) as store:
        await store.append("a", 0, [event()])

        assert await collect(store.read_stream("a", 2**70)) == []
        assert [e.version for e in await collect(store.read_stream("a", -(2**70), 2**70))] == [1]
        assert await collect(store.read_all(2**70)) == []
        assert await store.load_snapshot("a", max_version=-(2**70)) is None


def test_a_memory_path_is_refused() -> None:
    with pytest.raises(ValueError, match="InMemoryEventStore"):
        SQLiteEventStore(":memory:")


# -- pragmas --------------------------------------------------------------------------------------


async def test_journal_mode_is_wal_and_synchronous_is_full_by_default(db_path: Path) -> None:
    async with SQLiteEventStore(db_path) as store:
        await store.append("a", 0, [event()])
        other = sqlite3.connect(db_path)
        try:
            (journal_mode,) = other.execute("PRAGMA journal_mode").fetchone()
            (application_id,) = other.execute("PRAGMA application_id").fetchone()
            (user_version,) = other.execute("PRAGMA user_version").fetchone()
        finally:
            other.close()
        # synchronous is a setting of each connection: ask the store's own writer
        assert store._writer is not None
        synchronous = list(await store._writer.execute_fetchall("PRAGMA synchronous"))

    assert journal_mode == "wal"
    assert synchronous == [(2,)]  # FULL
    assert (application_id, user_version) == (APPLICATION_ID, SCHEMA_VERSION)


async def test_synchronous_can_be_set_to_normal(db_path: Path) -> None:
    async with SQLiteEventStore(db_path, synchronous="NORMAL") as store:
        assert store._writer is not None
        assert list(await store._writer.execute_fetchall("PRAGMA synchronous")) == [(1,)]


# -- group commit ---------------------------------------------------------------------------------


async def test_concurrent_appends_are_committed_in_fewer_transactions_than_appends(
    db_path: Path,
) -> None:
    appends = 100
    async with SQLiteEventStore(db_path) as store:
        await store.append("warm-up", 0, [event()])
        before = store.batches_committed
        results: list[AppendResult] = []

        async def append(n: int) -> None:
            results.append(await store.append(f"Account-{n}", 0, [event({"n": n})]))

        async with anyio.create_task_group() as tg:
            for n in range(appends):
                tg.start_soon(append, n)

        batches = store.batches_committed - before
        stored = await collect(store.read_all(2))

    assert 1 <= batches < appends
    assert len(results) == appends
    assert sorted(r.first_position for r in results) == list(range(2, appends + 2))
    assert [e.position for e in stored] == list(range(2, appends + 2))


async def test_a_conflict_in_a_batch_fails_only_that_append(db_path: Path) -> None:
    async with SQLiteEventStore(db_path) as store:
        await store.append("taken", 0, [event()])
        await store.append("dup-source", 0, [event(event_id="evt-dup")])
        before = store.batches_committed
        outcomes: dict[str, AppendResult | Exception] = {}

        async def append(name: str, stream_id: str, expected: int | None, e: NewEvent) -> None:
            try:
                outcomes[name] = await store.append(stream_id, expected, [e])
            except (ConcurrencyError, StoreError) as exc:
                outcomes[name] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(append, "first", "a", 0, event({"n": 1}))
            tg.start_soon(append, "conflict", "taken", 0, event())
            tg.start_soon(append, "duplicate", "b", 0, event(event_id="evt-dup"))
            tg.start_soon(append, "last", "c", None, event({"n": 2}))

        assert store.batches_committed - before == 1  # all four shared one transaction
        conflict = outcomes["conflict"]
        assert isinstance(conflict, ConcurrencyError)
        assert (conflict.expected_version, conflict.actual_version) == (0, 1)
        duplicate = outcomes["duplicate"]
        assert isinstance(duplicate, StoreError)
        assert "evt-dup" in str(duplicate)
        assert isinstance(outcomes["first"], AppendResult)
        assert isinstance(outcomes["last"], AppendResult)
        stored = await collect(store.read_all(3))
        assert [(e.stream_id, e.version, e.position, e.data) for e in stored] == [
            ("a", 1, 3, {"n": 1}),
            ("c", 1, 4, {"n": 2}),
        ]
        assert await store.stream_version("taken") == 1
        assert await store.stream_version("b") == 0


class _FailingCommit:
    """A writer connection whose COMMIT fails after every statement before it succeeded."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_a_failing_commit_fails_every_append_of_the_batch_and_stores_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit_batch = writer_module._commit_batch
    calls: list[int] = []

    def commit_batch_failing_once(
        conn: sqlite3.Connection, batch: list[Any], *args: Any, **kwargs: Any
    ) -> Any:
        calls.append(len(batch))
        if len(calls) == 1:
            # the batch's inserts run for real, then COMMIT fails: all must be rolled back
            return real_commit_batch(_FailingCommit(conn), batch, *args, **kwargs)  # type: ignore[arg-type]
        return real_commit_batch(conn, batch, *args, **kwargs)

    monkeypatch.setattr(writer_module, "_commit_batch", commit_batch_failing_once)
    errors: list[StoreError] = []

    async with SQLiteEventStore(db_path) as store:

        async def write(n: int) -> None:
            try:
                if n < 5:
                    await store.append(f"Account-{n}", 0, [event({"n": n})])
                else:
                    await store.save_snapshot(SnapshotRecord("Account-0", 1, {}))
            except StoreError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(write, n)

        assert calls[0] == 6  # the five appends and the snapshot were one batch
        assert len(errors) == 6
        assert len({id(e) for e in errors}) == 6  # one error object per caller
        for error in errors:
            assert str(db_path) in str(error)
            assert "disk I/O error" in str(error)
            assert "nothing of them was stored" in str(error)
            assert isinstance(error.__cause__, sqlite3.OperationalError)
        assert await collect(store.read_all()) == []
        assert await store.load_snapshot("Account-0") is None
        assert store.batches_committed == 0

        result = await store.append("Account-0", 0, [event()])
        assert (result.version, result.first_position) == (1, 1)
        assert store.batches_committed == 1


# -- the writer's fast way: few statements a batch -------------------------------------------


class _CountingConnection:
    """A writer connection that records every statement it runs (the first word, and whether
    it inserted several rows at once)."""

    def __init__(self, conn: sqlite3.Connection, statements: list[str]) -> None:
        self._conn = conn
        self._statements = statements

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._statements.append(sql.split(None, 1)[0])
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._statements.append("executemany")
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.fixture
def writer_statements(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The statements of each batch the writer commits, one list a batch."""
    real_commit_batch = writer_module._commit_batch
    batches: list[list[str]] = []

    def counting(conn: sqlite3.Connection, batch: list[Any], *args: Any, **kwargs: Any) -> Any:
        batches.append([])
        return real_commit_batch(_CountingConnection(conn, batches[-1]), batch, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module, "_commit_batch", counting)
    return batches


async def append_concurrently(
    store: SQLiteEventStore, appends: list[tuple[str, int, list[NewEvent]]]
) -> list[AppendResult | Exception]:
    """Append all at once (so that they share a batch); return each outcome, in order."""
    outcomes: list[AppendResult | Exception] = [StoreError("not run")] * len(appends)

    async def append(index: int) -> None:
        stream_id, expected, events = appends[index]
        try:
            outcomes[index] = await store.append(stream_id, expected, events)
        except (ConcurrencyError, StoreError) as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(len(appends)):
            tg.start_soon(append, index)
    return outcomes


async def load_concurrently(store: SQLiteEventStore, stream_ids: list[str]) -> dict[str, Any]:
    """Load these streams all at once (so that they share reader jobs); return each outcome:
    what ``load_latest`` returned, or the exception it raised."""
    outcomes: dict[str, Any] = {}

    async def load(stream_id: str) -> None:
        try:
            outcomes[stream_id] = await store.load_latest(stream_id)
        except Exception as exc:
            outcomes[stream_id] = exc

    async with anyio.create_task_group() as tg:
        for stream_id in stream_ids:
            tg.start_soon(load, stream_id)
    return outcomes


async def append_to_known_heads(
    store: SQLiteEventStore,
    writer_statements: list[list[str]],
    streams: int,
    events_per_append: int,
) -> tuple[list[AppendResult | Exception], list[StoredEvent]]:
    """Append an event to each of ``streams`` new streams (the writer learns their heads), then,
    with the writer's statements recorded from there on, ``events_per_append`` events to each,
    all at once; return that second round's outcomes and the events it stored."""
    await append_concurrently(store, [(f"s-{n}", 0, [event()]) for n in range(streams)])
    writer_statements.clear()
    outcomes = await append_concurrently(
        store,
        [(f"s-{n}", 1, [event() for _ in range(events_per_append)]) for n in range(streams)],
    )
    return outcomes, await collect(store.read_all(streams + 1))


async def test_a_batch_of_appends_to_known_heads_is_one_insert_statement(
    db_path: Path, writer_statements: list[list[str]]
) -> None:
    async with SQLiteEventStore(db_path) as store:
        outcomes, stored = await append_to_known_heads(store, writer_statements, 50, 2)

    # no BEGIN, no version query, no COMMIT: the statement is its own transaction
    assert writer_statements == [["INSERT"]]
    results = [o for o in outcomes if isinstance(o, AppendResult)]
    assert len(results) == 50
    assert sorted(r.first_position for r in results) == list(range(51, 151, 2))
    assert all(r.version == 3 for r in results)
    assert [e.position for e in stored] == list(range(51, 151))
    for result in results:  # each append's events took its two positions, in version order
        first, second = (
            e for e in stored if e.position in (result.first_position, result.first_position + 1)
        )
        assert first.stream_id == second.stream_id
        assert (first.version, second.version) == (2, 3)


def test_all_at_once_statements_come_in_few_sizes_and_pad_at_most_63_rows() -> None:
    sizes = {commit_module._statement_rows(rows) for rows in range(1, 1025)}
    # each size stays compiled in the connection's statement cache (128 statements)
    assert len(sizes) <= 24
    for rows in range(1, 1025):
        size = commit_module._statement_rows(rows)
        assert rows <= size <= 1024
        assert size - rows < 64


async def test_a_batch_of_a_size_between_statement_sizes_stores_every_row_in_order(
    db_path: Path, writer_statements: list[list[str]]
) -> None:
    async with SQLiteEventStore(db_path) as store:
        # 100 appends of one event: the 128-row statement with 28 rows of padding
        outcomes, stored = await append_to_known_heads(store, writer_statements, 100, 1)

    assert writer_statements == [["INSERT"]]
    assert sorted(o.first_position for o in outcomes if isinstance(o, AppendResult)) == list(
        range(101, 201)
    )
    assert [e.position for e in stored] == list(range(101, 201))
    assert {(e.stream_id, e.version) for e in stored} == {(f"s-{n}", 2) for n in range(100)}


async def test_the_writer_remembers_only_the_newest_heads_and_still_checks_the_forgotten(
    db_path: Path,
) -> None:
    async with SQLiteEventStore(db_path, known_heads=3) as store:
        for n in range(10):
            await store.append(f"s-{n}", 0, [event()])
        # the three streams written last are remembered, oldest forgotten first
        assert list(store._heads) == ["s-7", "s-8", "s-9"]
        # a forgotten head is checked by the statement: a stale version still fails
        with pytest.raises(ConcurrencyError) as caught:
            await store.append("s-0", 0, [event()])
        assert (caught.value.expected_version, caught.value.actual_version) == (0, 1)
        result = await store.append("s-0", 1, [event()])
        assert result.version == 2
        assert len(store._heads) == 3


async def test_heads_of_unknown_streams_are_checked_by_the_insert_itself(
    db_path: Path, writer_statements: list[list[str]]
) -> None:
    async with SQLiteEventStore(db_path) as other:
        await append_concurrently(other, [(f"s-{n}", 0, [event()]) for n in range(20)])
    writer_statements.clear()
    async with SQLiteEventStore(db_path) as store:
        outcomes = await append_concurrently(
            store,
            [(f"s-{n}", 1, [event()]) for n in range(20)]
            + [(f"new-{n}", 0, [event()]) for n in range(20)],
        )
        stored = await collect(store.read_all(21))

    assert all(isinstance(o, AppendResult) for o in outcomes)
    assert writer_statements == [["INSERT"]]
    assert sorted((e.stream_id, e.version) for e in stored) == sorted(
        [(f"s-{n}", 2) for n in range(20)] + [(f"new-{n}", 1) for n in range(20)]
    )


async def test_several_events_to_an_unknown_stream_are_checked_against_its_head_before_the_insert(
    db_path: Path, writer_statements: list[list[str]]
) -> None:
    async with SQLiteEventStore(db_path) as other:
        await other.append("s", 0, [event()])
    writer_statements.clear()
    async with SQLiteEventStore(db_path) as store:  # knows no head
        result = await store.append("s", 1, [event({"i": i}) for i in range(3)])
        stored = await collect(store.read_stream("s"))

    # every row's check saw the head from before the statement, not the rows it inserted
    assert writer_statements == [["INSERT"]]
    assert (result.version, result.first_position) == (4, 2)
    assert [(e.version, e.position, e.data) for e in stored[1:]] == [
        (2, 2, {"i": 0}),
        (3, 3, {"i": 1}),
        (4, 4, {"i": 2}),
    ]


async def test_an_unknown_stream_behind_the_expected_version_is_refused_with_no_gap(
    db_path: Path,
) -> None:
    async with SQLiteEventStore(db_path) as other:
        await other.append("behind", 0, [event()])
        await other.append("ahead", 0, [event(), event(), event()])
    async with SQLiteEventStore(db_path) as store:  # knows no head
        outcomes = await append_concurrently(
            store,
            [
                ("behind", 3, [event()]),  # the stream is at 1: storing version 4 leaves a gap
                ("ahead", 1, [event()]),  # the stream is at 3: version 2 is taken
                ("fine", 0, [event({"ok": True})]),
            ],
        )
        stored = await collect(store.read_all(5))
        assert await store.stream_version("behind") == 1

    behind, ahead, fine = outcomes
    assert isinstance(behind, ConcurrencyError)
    assert (behind.expected_version, behind.actual_version) == (3, 1)
    assert isinstance(ahead, ConcurrencyError)
    assert (ahead.expected_version, ahead.actual_version) == (1, 3)
    assert isinstance(fine, AppendResult)
    assert [(e.stream_id, e.version, e.position) for e in stored] == [("fine", 1, 5)]


async def test_one_stale_head_in_a_fast_batch_fails_only_its_append_and_leaves_no_gap(
    db_path: Path,
) -> None:
    async with SQLiteEventStore(db_path) as store, SQLiteEventStore(db_path) as other:
        await append_concurrently(store, [(f"s-{n}", 0, [event()]) for n in range(30)])
        await other.append("s-7", 1, [event({"by": "other"})])  # behind store's back
        outcomes = await append_concurrently(
            store, [(f"s-{n}", 1, [event({"n": n})]) for n in range(30)]
        )
        stored = await collect(store.read_all())

    failed = [(n, o) for n, o in enumerate(outcomes) if isinstance(o, Exception)]
    assert len(failed) == 1
    n, error = failed[0]
    assert n == 7
    assert isinstance(error, ConcurrencyError)
    assert (error.stream_id, error.expected_version, error.actual_version) == ("s-7", 1, 2)
    assert [e.position for e in stored] == list(range(1, 61))
    assert {e.data.get("n") for e in stored if e.version == 2} == set(range(30)) - {7} | {None}
    for n, outcome in enumerate(outcomes):
        if isinstance(outcome, AppendResult):
            assert next(e for e in stored if e.position == outcome.first_position).data == {"n": n}


async def test_a_batch_larger_than_one_statement_is_one_transaction_with_contiguous_positions(
    db_path: Path, writer_statements: list[list[str]]
) -> None:
    async with SQLiteEventStore(db_path) as store:
        outcomes = await append_concurrently(
            store, [(f"s-{n}", 0, [event() for _ in range(10)]) for n in range(150)]
        )
        stored = await collect(store.read_all())

    assert all(isinstance(o, AppendResult) for o in outcomes)
    assert [e.position for e in stored] == list(range(1, 1501))
    (statements,) = writer_statements
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    # 1,500 rows in multi-row statements, not one statement per append
    assert statements.count("INSERT") < 150 // 4


async def test_a_refused_run_in_a_mixed_batch_goes_one_append_at_a_time(
    db_path: Path,
) -> None:
    async with SQLiteEventStore(db_path) as store, SQLiteEventStore(db_path) as other:
        await append_concurrently(store, [(f"s-{n}", 0, [event()]) for n in range(100)])
        await other.append("s-99", 1, [event()])
        await other.append("dup", 0, [event(event_id="taken")])
        outcomes: list[AppendResult | Exception | None] = []

        async def snapshot() -> None:
            await store.save_snapshot(SnapshotRecord("s-0", 1, {"balance": 1}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(snapshot)  # a snapshot in the batch: the general way, with runs
            outcomes.extend(
                await append_concurrently(
                    store,
                    [(f"s-{n}", 1, [event({"n": n})]) for n in range(100)]
                    + [("fresh", 0, [event(event_id="taken")])],
                )
            )
        stored = await collect(store.read_all())
        snapshot_record = await store.load_snapshot("s-0")

    errors = {n: o for n, o in enumerate(outcomes) if isinstance(o, Exception)}
    assert set(errors) == {99, 100}
    assert isinstance(errors[99], ConcurrencyError)
    assert isinstance(errors[100], StoreError) and "'taken'" in str(errors[100])
    assert [e.position for e in stored] == list(range(1, len(stored) + 1))
    assert len(stored) == 100 + 2 + 99
    assert snapshot_record is not None and snapshot_record.state == {"balance": 1}


async def test_a_failing_fast_insert_stores_nothing_and_the_next_batch_works(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_commit_batch = writer_module._commit_batch
    calls: list[int] = []

    class _FailingInsert(_FailingCommit):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith("INSERT INTO events"):
                raise sqlite3.OperationalError("disk I/O error")
            return self._conn.execute(sql, *args)

    def failing_once(conn: sqlite3.Connection, batch: list[Any], *args: Any, **kw: Any) -> Any:
        calls.append(len(batch))
        if len(calls) == 1:
            return real_commit_batch(_FailingInsert(conn), batch, *args, **kw)  # type: ignore[arg-type]
        return real_commit_batch(conn, batch, *args, **kw)

    monkeypatch.setattr(writer_module, "_commit_batch", failing_once)
    async with SQLiteEventStore(db_path) as store:
        outcomes = await append_concurrently(store, [(f"s-{n}", 0, [event()]) for n in range(5)])
        assert all(isinstance(o, StoreError) and "disk I/O error" in str(o) for o in outcomes)
        assert await collect(store.read_all()) == []
        result = await store.append("s-0", 0, [event()])
        assert (result.version, result.first_position) == (1, 1)


async def test_append_then_calls_back_at_commit_with_the_result_or_this_appends_error(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with SQLiteEventStore(db_path) as store:
        await store.append("taken", 0, [event()])
        outcomes: dict[str, AppendResult | BaseException] = {}
        all_called = anyio.Event()

        def on_done(name: str) -> Callable[[AppendResult | BaseException], None]:
            def record(outcome: AppendResult | BaseException) -> None:
                outcomes[name] = outcome
                if len(outcomes) == 3:
                    all_called.set()
                if name == "raises":
                    raise RuntimeError("a broken callback")

            return record

        store.append_then("raises", 0, [event()], on_done("raises"))
        store.append_then("conflict", 0, [event()], on_done("conflict"))  # fine: new stream
        store.append_then("taken", 0, [event()], on_done("taken"))
        assert outcomes == {}  # nothing is called before the commit
        with anyio.fail_after(5):
            await all_called.wait()
        stored = await collect(store.read_all(2))

    assert isinstance(outcomes["raises"], AppendResult)
    assert isinstance(outcomes["conflict"], AppendResult)
    taken = outcomes["taken"]
    assert isinstance(taken, ConcurrencyError)
    assert (taken.stream_id, taken.expected_version, taken.actual_version) == ("taken", 0, 1)
    assert [e.stream_id for e in stored] == ["raises", "conflict"]
    assert "an append's callback failed" in caplog.text


async def test_a_burst_hands_its_appends_to_an_idle_writer_together_as_it_ends(
    db_path: Path, writer_statements: list[list[str]]
) -> None:
    async with SQLiteEventStore(db_path) as store:
        before = store.batches_committed
        outcomes: list[AppendResult | BaseException] = []
        three_done = anyio.Event()

        def record(outcome: AppendResult | BaseException) -> None:
            outcomes.append(outcome)
            if len(outcomes) == 3:
                three_done.set()

        with store.burst():
            store.append_then("a", 0, [event()], record)
            with store.burst():  # bursts nest: the outer one's end counts
                store.append_then("b", 0, [event()], record)
            assert writer_statements == []  # nothing started yet
        # the burst's end started the writer: this one waits for the next batch
        store.append_then("c", 0, [event()], record)
        with anyio.fail_after(5):
            await three_done.wait()

    assert all(isinstance(o, AppendResult) for o in outcomes)
    assert store.batches_committed - before == 2
    assert writer_statements == [["INSERT"], ["INSERT"]]


class CountingQueue:
    """Stands in for the job queue of the writer's thread and counts what is put on it (all
    puts come from the loop: batches handed over, and other calls on the connection)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.puts = 0
        self._put = anyio.Event()

    def put_nowait(self, item: Any) -> None:
        self.puts += 1
        self.queue.put_nowait(item)
        self._put.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    async def wait_for_puts(self, expected: int) -> None:
        # the loop hands a batch over in a callback of its next step
        with anyio.fail_after(5):
            while self.puts < expected:
                self._put = anyio.Event()
                await self._put.wait()


def count_handovers(store: SQLiteEventStore) -> CountingQueue:
    """Count the batches the loop hands to the writer's thread (and other calls queued there)."""
    assert store._writer is not None
    counting = CountingQueue(store._writer._jobs)
    store._writer._jobs = counting  # type: ignore[assignment]
    return counting


@contextlib.contextmanager
def write_lock_held(db_path: Path) -> Iterator[None]:
    """Another connection holds the file's write lock: the writer's next commit waits for it."""
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.execute("COMMIT")
        blocker.close()


async def test_writes_queued_during_a_commit_are_taken_by_the_writers_thread_itself(
    db_path: Path,
) -> None:
    async with SQLiteEventStore(db_path) as store:
        await store.append("warm-up", 0, [event()])
        before = store.batches_committed
        handovers = count_handovers(store)
        with write_lock_held(db_path):  # the writer's next commit waits for it
            first = store.submit_append("a", 0, [event()])
            await handovers.wait_for_puts(1)
            # the writer's thread is busy with "a": these wait for it, and it takes them
            later = [store.submit_append(name, 0, [event()]) for name in ("b", "c", "d")]
        with anyio.fail_after(5):
            results = [await first] + [await f for f in later]
        stored = await collect(store.read_all(2))
        assert handovers.puts == 1  # no second handover: the thread went on by itself

    assert store.batches_committed - before == 2
    assert [r.first_position for r in results] == [2, 3, 4, 5]
    assert [(e.stream_id, e.position) for e in stored] == [("a", 2), ("b", 3), ("c", 4), ("d", 5)]


async def test_closing_answers_every_write_the_writers_thread_took_by_itself(
    db_path: Path,
) -> None:
    store = SQLiteEventStore(db_path)
    async with store:
        handovers = count_handovers(store)
        with write_lock_held(db_path):  # the writer's next commit waits for it
            first = store.submit_append("a", 0, [event()])
            await handovers.wait_for_puts(1)
            later = [store.submit_append(name, 0, [event()]) for name in ("b", "c")]
        # leaving the block closes the store at once, while the writer commits

    assert [f.result().version for f in [first, *later]] == [1, 1, 1]
    async with SQLiteEventStore(db_path) as reopened:
        assert [e.stream_id for e in await collect(reopened.read_all())] == ["a", "b", "c"]


async def test_another_call_on_the_writers_connection_is_not_held_back_by_queued_writes(
    db_path: Path,
) -> None:
    async with SQLiteEventStore(db_path) as store:
        assert store._writer is not None
        handovers = count_handovers(store)
        with write_lock_held(db_path):  # the writer's next commit waits for it
            first = store.submit_append("a", 0, [event()])
            await handovers.wait_for_puts(1)
            # queued on the connection's thread behind the batch in commit
            query = asyncio.ensure_future(store._writer.execute_fetchall("SELECT 41 + 1"))
            await handovers.wait_for_puts(2)
            later = store.submit_append("b", 0, [event()])
        with anyio.fail_after(5):
            assert list(await query) == [(42,)]
            assert (await first).version == (await later).version == 1
        # the thread let the query run before "b": the loop handed "b" over after it
        assert handovers.puts == 3


async def test_a_store_whose_writer_stopped_refuses_writes_instead_of_hanging(
    db_path: Path,
) -> None:
    async with SQLiteEventStore(db_path) as store:
        await store.append("a", 0, [event()])
        assert store._writer is not None
        await store._writer.close()  # its thread ends, as if it had died

        with anyio.fail_after(5), pytest.raises(StoreError, match="writer thread has stopped"):
            await store.append("a", 1, [event()])
        # reads still work, and closing does not raise the writer's cancellation
        assert await store.stream_version("a") == 1


# -- two store objects on one file ----------------------------------------------------------------


async def test_two_stores_on_one_file_keep_versions_contiguous(db_path: Path) -> None:
    per_writer = 25
    conflicts: list[ConcurrencyError] = []

    async def write(store: SQLiteEventStore, name: str) -> None:
        expected = await store.stream_version("shared")
        written = 0
        while written < per_writer:
            try:
                result = await store.append("shared", expected, [event({"by": name})])
            except ConcurrencyError as exc:
                conflicts.append(exc)
                expected = exc.actual_version
            else:
                expected = result.version
                written += 1

    async with SQLiteEventStore(db_path) as a, SQLiteEventStore(db_path) as b:
        async with anyio.create_task_group() as tg:
            for store, name in ((a, "a"), (b, "b"), (a, "a2"), (b, "b2")):
                tg.start_soon(write, store, name)
        from_a = await collect(a.read_all())
        from_b = await collect(b.read_all())

    assert from_a == from_b
    total = 4 * per_writer
    assert [e.version for e in from_a] == list(range(1, total + 1))
    assert [e.position for e in from_a] == list(range(1, total + 1))
    assert sorted(e.data["by"] for e in from_a) == sorted(["a", "b", "a2", "b2"] * per_writer)
    assert all(c.actual_version > c.expected_version for c in conflicts)


async def test_a_stale_cached_head_raises_concurrency_error_not_a_gap(db_path: Path) -> None:
    async with SQLiteEventStore(db_path) as a, SQLiteEventStore(db_path) as b:
        assert (await a.append("s", 0, [event()])).version == 1  # a's writer now caches head 1
        assert (await b.append("s", 1, [event()])).version == 2  # behind a's back

        with pytest.raises(ConcurrencyError) as caught:
            await a.append("s", 1, [event()])
        assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)

        result = await a.append("s", 2, [event()])
        assert (result.version, result.first_position) == (3, 3)
        # and a's head for "s" is right again for expected_version=None too
        assert (await b.append("s", None, [event()])).version == 4
        assert (await a.append("s", None, [event()])).version == 5
        stored = await collect(a.read_stream("s"))

    assert [(e.version, e.position) for e in stored] == [(n, n) for n in range(1, 6)]


async def test_a_retry_of_another_stores_append_is_idempotent_despite_a_stale_head(
    db_path: Path,
) -> None:
    async with SQLiteEventStore(db_path) as a, SQLiteEventStore(db_path) as b:
        assert (await a.append("s", 0, [event()])).version == 1  # a's writer now caches head 1
        retried = [event(event_id="r-1"), event(event_id="r-2")]
        original = await b.append("s", 1, retried)  # committed behind a's back
        # a expects its cached head, inserts, collides: a constraint error, then the lookup
        assert await a.append("s", 1, retried) == original
        assert await a.append("s", None, retried[:1]) == AppendResult(
            2, original.first_position, original.recorded_at
        )
        stored = await collect(a.read_stream("s"))

    assert [e.event_id for e in stored][1:] == ["r-1", "r-2"]


async def test_find_command_events_reads_the_stream_through_its_index(db_path: Path) -> None:
    async with SQLiteEventStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM events WHERE stream_id = ? AND "
            "json_extract(metadata, '$.command_id') IN (?) ORDER BY version",
            ("s", "c"),
        ).fetchall()
    finally:
        conn.close()
    details = " ".join(row[-1] for row in plan)
    assert "USING INDEX" in details and "(stream_id=?)" in details, details
    assert "TEMP B-TREE" not in details  # the index gives the version order


# -- files that are not (or not yet) ours ---------------------------------------------------------


def _make_foreign_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()


def _make_newer_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (position INTEGER PRIMARY KEY)")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


def _make_other_applications_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()


def _make_non_sqlite_file(path: Path) -> None:
    path.write_bytes(b"this is a text file, not a database\n" * 200)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_make_non_sqlite_file, "not a SQLite database"),
        (_make_foreign_database, "holds tables users"),
        (_make_newer_database, f"schema version {SCHEMA_VERSION + 1}, newer"),
        (_make_other_applications_database, "another application's"),
    ],
    ids=["not sqlite", "foreign tables", "newer schema", "other application id"],
)
async def test_a_file_that_is_not_ours_is_refused_by_path_and_left_unchanged(
    db_path: Path, make: Any, reason: str
) -> None:
    make(db_path)
    before = fingerprint(db_path)
    store = SQLiteEventStore(db_path)

    with pytest.raises(IncompatibleStoreError, match=re.escape(reason)) as caught:
        await store.open()

    assert str(db_path) in str(caught.value)
    assert fingerprint(db_path) == before
    assert not store.is_open


def _make_empty_file(path: Path) -> None:
    path.write_bytes(b"")


async def test_an_empty_file_becomes_a_store(db_path: Path) -> None:
    _make_empty_file(db_path)

    async with SQLiteEventStore(db_path) as store:
        assert (await store.append("a", 0, [event()])).version == 1


async def test_a_missing_directory_is_refused_by_path(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "events.db"
    store = SQLiteEventStore(path)

    with pytest.raises(StoreError, match="does not exist") as caught:
        await store.open()

    assert str(path) in str(caught.value)
    assert not path.parent.exists()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("running as root: a read-only directory is writable anyway")
        yield directory
    finally:
        directory.chmod(stat.S_IRWXU)


async def test_a_read_only_directory_is_refused_by_path(read_only_dir: Path) -> None:
    path = read_only_dir / "events.db"
    store = SQLiteEventStore(path)

    with pytest.raises(StoreError) as caught:
        await store.open()

    assert str(path) in str(caught.value)
    assert not isinstance(caught.value, IncompatibleStoreError)
    assert os.listdir(read_only_dir) == []


async def test_a_locked_file_is_a_store_error_not_a_foreign_database(db_path: Path) -> None:
    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        store = SQLiteEventStore(db_path, busy_timeout=0.05)

        with pytest.raises(StoreError, match="locked") as caught:
            await store.open()
    finally:
        locker.close()

    assert str(db_path) in str(caught.value)
    assert not isinstance(caught.value, IncompatibleStoreError)
    # once the lock is gone the same file opens fine
    async with SQLiteEventStore(db_path) as store:
        assert (await store.append("a", 0, [event()])).version == 1


async def test_read_stream_data_yields_what_read_stream_holds_across_pages(
    tmp_path: Path,
) -> None:
    async with SQLiteEventStore(tmp_path / "lean.db", read_page_size=7) as store:
        for n in range(5):
            await store.append("s", n * 5, [event({"n": n, "i": i}) for i in range(5)])
        await store.append("other", 0, [event({"n": -1})])
        full = [(e.version, e.type, e.data) for e in await collect(store.read_stream("s", 4))]
        lean = [item async for item in store.read_stream_data("s", 4)]
    assert lean == full
    assert [v for v, _, _ in lean] == list(range(4, 26))


async def test_a_reader_that_stops_early_leaves_no_fetch_behind(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "early.db", read_page_size=3) as store:
        await store.append("s", 0, [event({"i": i}) for i in range(10)])
        stream = store.read_stream("s")
        first = [e.version async for e in _take(stream, 4)]
        await stream.aclose()  # type: ignore[attr-defined]
        assert first == [1, 2, 3, 4]
        assert await store.stream_version("s") == 10  # the reader still serves


async def _take(items: Any, count: int) -> Any:
    async for item in items:
        yield item
        count -= 1
        if not count:
            return


async def test_load_latest_reads_the_snapshot_and_the_page_after_it_at_once(
    tmp_path: Path,
) -> None:
    async with SQLiteEventStore(tmp_path / "latest.db", read_page_size=4) as store:
        await store.append("s", 0, [event({"i": i}) for i in range(10)])
        assert await store.load_latest("empty") == (None, [], True)
        snapshot, page, complete = await store.load_latest("s")
        assert snapshot is None and not complete
        assert [v for v, _, _ in page] == [1, 2, 3, 4]
        await store.save_snapshot(SnapshotRecord("s", 7, {"state": 7}, 1))
        snapshot, page, complete = await store.load_latest("s")
        assert snapshot is not None and (snapshot.version, snapshot.state) == (7, {"state": 7})
        assert [(v, d) for v, _, d in page] == [(8, {"i": 7}), (9, {"i": 8}), (10, {"i": 9})]
        assert complete


async def test_concurrent_loads_share_reader_jobs_and_each_gets_its_own_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SQLiteEventStore(tmp_path / "loads.db") as store:
        await append_concurrently(
            store, [(f"s-{n}", 0, [event({"n": n}) for _ in range(n % 3 + 1)]) for n in range(100)]
        )
        jobs: list[int] = []
        real_done = store._loads_done

        def counting_done(loads: list[Any], outcomes: list[Any]) -> None:
            jobs.append(len(loads))
            real_done(loads, outcomes)

        monkeypatch.setattr(store, "_loads_done", counting_done)
        loaded: dict[int, Any] = {}

        async def load(n: int) -> None:
            loaded[n] = await store.load_latest(f"s-{n}")

        async with anyio.create_task_group() as tg:
            for n in range(100):
                tg.start_soon(load, n)

    assert sum(jobs) == 100
    assert len(jobs) < 10  # the first load alone, then the others together
    for n, (snapshot, page, complete) in loaded.items():
        assert snapshot is None and complete
        assert [(version, data) for version, _, data in page] == [
            (v, {"n": n}) for v in range(1, n % 3 + 2)
        ]


async def test_a_job_of_loads_reads_every_stream_with_one_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_stream_by_stream(*args: Any) -> Any:
        raise sqlite3.OperationalError("read stream by stream")

    async with SQLiteEventStore(tmp_path / "loads.db", read_page_size=4) as store:
        await append_concurrently(
            store,
            [
                (f"s-{n}", 0, [event({"n": n, "i": i}) for i in range(n % 6)])
                for n in range(1, 40)
                if n % 6  # the others are never written
            ],
        )
        await store.save_snapshot(SnapshotRecord("s-5", 3, {"at": 3}, 2))
        await store.save_snapshot(SnapshotRecord("s-5", 2, {"at": 2}, 1))
        await store.append(
            'we"ird\\type-1',
            0,
            [NewEvent(str(uuid.uuid4()), 'a "quoted"\ttype', {"x": [1, None]}, {})],
        )
        monkeypatch.setattr(reads_module, "_latest", no_stream_by_stream)
        wanted = [f"s-{n}" for n in range(1, 40)] + ['we"ird\\type-1', "never-written"]
        loaded = await load_concurrently(store, wanted)

    for n in range(1, 40):
        snapshot, page, complete = loaded[f"s-{n}"]
        if n == 5:  # the latest snapshot, and the events after it
            assert snapshot == SnapshotRecord("s-5", 3, {"at": 3}, 2, snapshot.recorded_at)
            assert [(v, d) for v, _, d in page] == [(4, {"n": 5, "i": 3}), (5, {"n": 5, "i": 4})]
            assert complete
            continue
        assert snapshot is None
        count = n % 6
        # the first page only: at most read_page_size events, and whether more follow
        assert [(v, t, d) for v, t, d in page] == [
            (i + 1, "Deposited", {"n": n, "i": i}) for i in range(min(count, 4))
        ]
        assert complete == (count < 4)
    assert loaded['we"ird\\type-1'][1] == [(1, 'a "quoted"\ttype', {"x": [1, None]})]
    assert loaded["never-written"] == (None, [], True)


async def test_a_load_in_a_job_reads_128_events_and_says_more_follow(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "loads.db") as store:
        await store.append("long", 0, [event({"i": i}) for i in range(130)])
        await store.append("short", 0, [event({"i": i}) for i in range(128)])
        snapshot, page, complete = await store.load_latest("long")
        assert snapshot is None and not complete
        assert [(v, d) for v, _, d in page] == [(i + 1, {"i": i}) for i in range(128)]
        rest = [row async for row in store.read_stream_data("long", 129)]
        assert [v for v, _, _ in rest] == [129, 130]
        # exactly 128: whether more follow is read as it is for a full page of read_page_size
        _, page, complete = await store.load_latest("short")
        assert len(page) == 128 and not complete


async def test_a_stored_event_that_is_not_json_fails_only_the_load_of_its_stream(
    tmp_path: Path,
) -> None:
    path = tmp_path / "loads.db"
    async with SQLiteEventStore(path) as store:
        await store.append("good", 0, [event()])
        await store.append("bad", 0, [event()])
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE events SET data = '{broken' WHERE stream_id = 'bad'")
    async with SQLiteEventStore(path) as store:
        outcomes = await load_concurrently(store, ["warm-up", "good", "bad", "other"])

    bad = outcomes["bad"]
    assert isinstance(bad, CodecError)
    assert (bad.stream_id, bad.version, bad.position) == ("bad", 1, 2)
    assert [version for version, _, _ in outcomes["good"][1]] == [1]
    assert outcomes["other"] == (None, [], True)


async def test_a_load_that_fails_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_latest = reads_module._latest

    def latest_failing_for_bad(conn: sqlite3.Connection, stream_id: str, page: int) -> Any:
        if stream_id == "bad":
            raise sqlite3.OperationalError("disk I/O error")
        return real_latest(conn, stream_id, page)

    # the job's one statement could not be run (it then reads stream by stream)
    monkeypatch.setattr(reads_module, "_latest_many", lambda *args: None)
    monkeypatch.setattr(reads_module, "_latest", latest_failing_for_bad)
    async with SQLiteEventStore(tmp_path / "loads.db") as store:
        await store.append("good", 0, [event()])
        outcomes = await load_concurrently(store, ["warm-up", "good", "bad", "other"])

    bad = outcomes["bad"]
    assert isinstance(bad, StoreError)
    assert "disk I/O error" in str(bad) and str(tmp_path / "loads.db") in str(bad)
    assert [version for version, _, _ in outcomes["good"][1]] == [1]
    assert outcomes["other"] == (None, [], True)
