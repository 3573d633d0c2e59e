"""Compression of large event data and snapshot states (the stores' ``compress_over``), on
SQLite and PostgreSQL (the memory store compresses nothing)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from actorsource import (
    CodecError,
    EventStore,
    Runtime,
    SnapshotRecord,
    SQLiteEventStore,
    StoredEvent,
    StreamArchivedError,
)

from ..conftest import POSTGRES_DSN, SKIP_WITHOUT_POSTGRES, drop_schema, postgres_schema, run_sync
from ..domain import Account, Deposit
from .test_contract import collect, event

LARGE: dict[str, Any] = {"lines": [{"sku": f"SKU-{i:05d}", "qty": i % 7} for i in range(200)]}
SMALL: dict[str, Any] = {"amount": 1}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The stores that compress."""
    yield str(request.param)
    if request.param == "postgres":
        run_sync(drop_schema(POSTGRES_DSN, postgres_schema(tmp_path)))


def _store(kind: str, tmp_path: Path, compress_over: int | None = None) -> EventStore:
    """An unopened store of ``kind`` (the same database for every call of one test)."""
    if kind == "sqlite":
        return SQLiteEventStore(tmp_path / "events.db", compress_over=compress_over)
    from actorsource import PostgresEventStore

    return PostgresEventStore(
        POSTGRES_DSN, schema=postgres_schema(tmp_path), compress_over=compress_over
    )


async def _raw(kind: str, tmp_path: Path, sqlite_sql: str, postgres_sql: str) -> list[Any]:
    """The rows of a query on the store's tables, as the database holds them."""
    if kind == "sqlite":
        with sqlite3.connect(tmp_path / "events.db") as conn:
            return [tuple(row) for row in conn.execute(sqlite_sql)]
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'SET search_path TO "{postgres_schema(tmp_path)}"')
        return [tuple(row) for row in await conn.fetch(postgres_sql)]
    finally:
        await conn.close()


async def _data_classes(kind: str, tmp_path: Path) -> list[tuple[str, int]]:
    """Each event's data as stored, by position: ("compressed" or "text", its size in bytes)."""
    return await _raw(
        kind,
        tmp_path,
        "SELECT CASE typeof(data) WHEN 'blob' THEN 'compressed' ELSE typeof(data) END, "
        "length(CAST(data AS BLOB)) FROM events ORDER BY position",
        "SELECT CASE WHEN data_z IS NULL THEN 'text' ELSE 'compressed' END, "
        "coalesce(octet_length(data_z), octet_length(coalesce(data_text, data::text))) "
        "FROM events ORDER BY position",
    )


async def _snapshot_classes(kind: str, tmp_path: Path) -> list[tuple[str, int]]:
    """Each snapshot's state as stored, by version: ("compressed" or "text", version)."""
    return await _raw(
        kind,
        tmp_path,
        "SELECT CASE typeof(state) WHEN 'blob' THEN 'compressed' ELSE typeof(state) END, "
        "version FROM snapshots ORDER BY stream_id, version",
        "SELECT CASE WHEN state_z IS NULL THEN 'text' ELSE 'compressed' END, version "
        "FROM snapshots ORDER BY stream_id, version",
    )


async def test_large_event_data_is_stored_compressed_and_read_back_unchanged(
    kind: str, tmp_path: Path
) -> None:
    large_text_size = len(orjson.dumps(LARGE))
    async with _store(kind, tmp_path, compress_over=1024) as store:
        await store.append(
            "Order-1",
            0,
            [event("Placed", LARGE, {"command_id": "c-1"}), event("Noted", SMALL)],
        )
        by_stream = await collect(store.read_stream("Order-1"))
        by_position = await collect(store.read_all())
        by_command = await store.find_command_events("Order-1", ["c-1"])
        read_data = store.capabilities().read_stream_data
        assert read_data is not None
        lean = await collect(read_data("Order-1", 1))
    for read in (by_stream, by_position):
        assert [e.data for e in read] == [LARGE, SMALL]
    assert [e.data for e in by_command] == [LARGE]
    assert [data for _, _, data in lean] == [LARGE, SMALL]
    (large_kind, large_size), (small_kind, _) = await _data_classes(kind, tmp_path)
    assert (large_kind, small_kind) == ("compressed", "text")
    assert large_size < large_text_size / 4  # repetitive JSON compresses well


async def test_rows_stored_before_compression_read_unchanged_beside_compressed_ones(
    kind: str, tmp_path: Path
) -> None:
    async with _store(kind, tmp_path) as store:  # compression off (the default)
        await store.append("Order-1", 0, [event("Placed", LARGE)])
    async with _store(kind, tmp_path, compress_over=1024) as store:
        await store.append("Order-1", 1, [event("Placed", LARGE)])
        read = await collect(store.read_stream("Order-1"))
    assert [e.data for e in read] == [LARGE, LARGE]
    assert [c for c, _ in await _data_classes(kind, tmp_path)] == ["text", "compressed"]
    async with _store(kind, tmp_path) as store:  # and without compress_over, both still read
        assert [e.data for e in await collect(store.read_all())] == [LARGE, LARGE]


async def test_aggregates_with_compressed_events_and_snapshots_rehydrate(
    kind: str, tmp_path: Path
) -> None:
    # over 8 characters: every event ('{"amount":1}') and snapshot is compressed
    async with Runtime(_store(kind, tmp_path, compress_over=8), snapshot_every=3) as runtime:
        ref = runtime.ref(Account, "a")
        for _ in range(40):
            await ref.ask(Deposit(1))
        for n in range(5):  # a few more aggregates, loaded together later
            await runtime.ref(Account, f"b{n}").ask(Deposit(n + 1))
    assert {c for c, _ in await _data_classes(kind, tmp_path)} == {"compressed"}
    assert {c for c, _ in await _snapshot_classes(kind, tmp_path)} == {"compressed"}
    async with Runtime(_store(kind, tmp_path)) as runtime:
        state = await runtime.ref(Account, "a").state()
        others = [await runtime.ref(Account, f"b{n}").state() for n in range(5)]
        assert runtime.statistics().events_replayed == 1 + 5  # the tail after snapshot 39
    assert state.balance == 40 and state.history == [1] * 40
    assert [o.balance for o in others] == [1, 2, 3, 4, 5]


async def test_large_snapshot_states_are_stored_compressed(kind: str, tmp_path: Path) -> None:
    async with _store(kind, tmp_path, compress_over=1024) as store:
        await store.save_snapshot(SnapshotRecord("Order-1", 1, LARGE), keep=2)
        await store.save_snapshot(SnapshotRecord("Order-1", 2, SMALL), keep=2)
        await store.save_snapshot(SnapshotRecord("Order-2", 1, LARGE))  # in the writer's batch
        loaded = await store.load_snapshot("Order-1", max_version=1)
        assert loaded is not None and loaded.state == LARGE
        assert [i.version for i in await store.list_snapshots("Order-1")] == [1, 2]
        await store.append("Order-2", 0, [event("Placed", SMALL)])
        load_latest = store.capabilities().load_latest
        assert load_latest is not None
        latest, tail, _ = await load_latest("Order-2")
        assert latest is not None and latest.state == LARGE and tail == []
    kinds = await _snapshot_classes(kind, tmp_path)
    assert kinds == [("compressed", 1), ("text", 2), ("compressed", 1)]


async def test_inline_projections_see_compressed_events_decoded(kind: str, tmp_path: Path) -> None:
    seen: list[StoredEvent] = []
    async with _store(kind, tmp_path, compress_over=1024) as store:
        await store.append("Order-1", 0, [event("Placed", LARGE)])  # caught up on adding
        transactional = store.capabilities().transactional
        assert transactional is not None
        await transactional.add_inline_projection("view", lambda _, events: seen.extend(events))
        await store.append("Order-1", 1, [event("Placed", LARGE)])  # in the append
    assert [e.data for e in seen] == [LARGE, LARGE]


async def test_a_damaged_compressed_row_is_reported_naming_it(kind: str, tmp_path: Path) -> None:
    async with _store(kind, tmp_path, compress_over=1024) as store:
        await store.append("Order-1", 0, [event("Placed", LARGE)])
    await _raw(
        kind,
        tmp_path,
        "UPDATE events SET data = CAST(X'78010203' AS BLOB)",
        "UPDATE events SET data_z = '\\x78010203'::bytea",
    )
    async with _store(kind, tmp_path) as store:
        with pytest.raises(CodecError, match=r"version 1 of stream 'Order-1'.*not zlib-compressed"):
            await collect(store.read_stream("Order-1"))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1024", True])
def test_a_bad_compress_over_is_refused_naming_it(kind: str, tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="compress_over must be an int >= 1"):
        _store(kind, tmp_path, compress_over=bad)  # type: ignore[arg-type]


async def test_archived_streams_with_compressed_rows_say_where_they_start(
    kind: str, tmp_path: Path
) -> None:
    async with _store(kind, tmp_path, compress_over=1024) as store:
        await store.append("Order-1", 0, [event("Placed", LARGE) for _ in range(3)])
        await store.save_snapshot(SnapshotRecord("Order-1", 2, LARGE))
        archive = store.capabilities().archive_stream
        assert archive is not None
        assert await archive("Order-1", 2, None) == 2
        with pytest.raises(StreamArchivedError, match="'Order-1'"):
            await collect(store.read_stream("Order-1"))
        assert [e.data for e in await collect(store.read_stream("Order-1", 3))] == [LARGE]


async def test_large_batches_are_compressed_off_the_event_loop(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threaded: list[str] = []
    to_thread = asyncio.to_thread

    async def recording(func: Callable[..., Any], /, *args: Any) -> Any:
        threaded.append(func.__name__)
        return await to_thread(func, *args)

    async with _store(kind, tmp_path, compress_over=1024) as store:
        monkeypatch.setattr(asyncio, "to_thread", recording)
        huge = {"lines": LARGE["lines"] * 40}  # over 64 KiB of JSON
        await store.append("Order-1", 0, [event("Placed", huge)])
        await store.save_snapshot(SnapshotRecord("Order-1", 1, huge))
        read = await collect(store.read_stream("Order-1"))
        snapshot = await store.load_snapshot("Order-1")
    assert [e.data for e in read] == [huge]
    assert snapshot is not None and snapshot.state == huge
    if kind == "postgres":  # SQLite compresses on its writer's thread
        assert threaded == ["_compress_all", "compress_json"]


@pytest.mark.skipif(not POSTGRES_DSN, reason="needs PostgreSQL")
async def test_a_postgres_schema_of_version_2_is_upgraded_and_its_rows_read_beside_compressed(
    tmp_path: Path,
) -> None:
    import asyncpg

    from actorsource.stores.postgres.schema import _channel, _lock_key, _migrations

    schema = postgres_schema(tmp_path)
    steps = _migrations(schema, _lock_key("append", schema), _channel(schema))
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        for statement in steps[1] + steps[2]:
            await conn.execute(statement)
        await conn.execute(f'INSERT INTO "{schema}".actorsource_schema (version) VALUES (2)')
        text = orjson.dumps(LARGE).decode()
        await conn.execute(  # an event and a snapshot as version 2 stored them
            f'INSERT INTO "{schema}".events (position, stream_id, version, type, data, metadata, '
            "event_id, recorded_at) VALUES (1, 'Order-1', 1, 'Placed', $1::jsonb, '{}', 'e-1', "
            f"now()); INSERT INTO \"{schema}\".snapshots VALUES ('Order-1', 1, 1, $1::jsonb, "
            "NULL, now())".replace("$1", f"'{text}'")
        )
        from actorsource import PostgresEventStore

        # read-only: read as it is, not upgraded (version 2 has no compressed columns)
        async with PostgresEventStore(POSTGRES_DSN, schema=schema, read_only=True) as old:
            assert old.schema_version == 2
            assert [e.data for e in await collect(old.read_stream("Order-1"))] == [LARGE]
            assert [e.data for e in await collect(old.read_all())] == [LARGE]
            snapshot = await old.load_snapshot("Order-1")
            assert snapshot is not None and snapshot.state == LARGE
            load_latest = old.capabilities().load_latest
            assert load_latest is not None and (await load_latest("Order-1"))[0] == snapshot
            read_data = old.capabilities().read_stream_data
            assert read_data is not None
            assert [d for _, _, d in await collect(read_data("Order-1", 1))] == [LARGE]
        assert await conn.fetchval(f'SELECT version FROM "{schema}".actorsource_schema') == 2
        async with _store("postgres", tmp_path, compress_over=1024) as store:
            await store.append("Order-1", 1, [event("Placed", LARGE)])
            await store.save_snapshot(SnapshotRecord("Order-1", 2, LARGE))
            read = await collect(store.read_stream("Order-1"))
            states = [await store.load_snapshot("Order-1", max_version=v) for v in (1, 2)]
        assert [e.data for e in read] == [LARGE, LARGE]
        assert [s.state if s else None for s in states] == [LARGE, LARGE]
        assert [c for c, _ in await _data_classes("postgres", tmp_path)] == ["text", "compressed"]
        assert [c for c, _ in await _snapshot_classes("postgres", tmp_path)] == [
            "text",
            "compressed",
        ]
        # a row that holds both its JSONB and its compressed data is refused
        with pytest.raises(asyncpg.CheckViolationError, match="events_data_stored"):
            await conn.execute(
                f"UPDATE \"{schema}\".events SET data_z = '\\x00'::bytea WHERE version = 1"
            )
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def test_events_appended_with_timers_are_compressed_too(kind: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from actorsource import TimerSchedule

    async with _store(kind, tmp_path, compress_over=1024) as store:
        timers = store.capabilities().timers
        assert timers is not None
        due = datetime(2030, 1, 1, tzinfo=UTC)
        schedule = TimerSchedule("Order-1", "k", "Order-1", "Tick", {}, due, None, "once")
        events = [event("Placed", LARGE), event("Noted", SMALL)]
        await timers.append_with_timers("Order-1", 0, events, [schedule])
        read = await collect(store.read_stream("Order-1"))
    assert [e.data for e in read] == [LARGE, SMALL]
    assert [c for c, _ in await _data_classes(kind, tmp_path)] == ["compressed", "text"]
