"""Compression of large event data and snapshot states (SQLite's ``compress_over``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from actorsource import (
    CodecError,
    Runtime,
    SnapshotRecord,
    SQLiteEventStore,
    StoredEvent,
)

from ..domain import Account, Deposit
from .test_contract import collect, event

LARGE: dict[str, Any] = {"lines": [{"sku": f"SKU-{i:05d}", "qty": i % 7} for i in range(200)]}
SMALL: dict[str, Any] = {"amount": 1}


def _storage_classes(path: Path, sql: str) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        return [(kind, size) for kind, size in conn.execute(sql)]


def _data_classes(path: Path) -> list[tuple[str, int]]:
    return _storage_classes(
        path, "SELECT typeof(data), length(CAST(data AS BLOB)) FROM events ORDER BY position"
    )


async def test_large_event_data_is_stored_compressed_and_read_back_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    large_text_size = len(orjson.dumps(LARGE))
    async with SQLiteEventStore(path, compress_over=1024) as store:
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
    (large_kind, large_size), (small_kind, _) = _data_classes(path)
    assert (large_kind, small_kind) == ("blob", "text")
    assert large_size < large_text_size / 4  # repetitive JSON compresses well


async def test_rows_stored_before_compression_read_unchanged_beside_compressed_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with SQLiteEventStore(path) as store:  # compression off (the default)
        await store.append("Order-1", 0, [event("Placed", LARGE)])
    async with SQLiteEventStore(path, compress_over=1024) as store:
        await store.append("Order-1", 1, [event("Placed", LARGE)])
        read = await collect(store.read_stream("Order-1"))
    assert [e.data for e in read] == [LARGE, LARGE]
    assert [kind for kind, _ in _data_classes(path)] == ["text", "blob"]
    async with SQLiteEventStore(path) as store:  # and without compress_over, both still read
        assert [e.data for e in await collect(store.read_all())] == [LARGE, LARGE]


async def test_aggregates_with_compressed_events_and_snapshots_rehydrate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    # over 8 characters: every event ('{"amount":1}') and snapshot is compressed
    async with Runtime(SQLiteEventStore(path, compress_over=8), snapshot_every=3) as runtime:
        ref = runtime.ref(Account, "a")
        for _ in range(40):
            await ref.ask(Deposit(1))
        for n in range(5):  # a few more aggregates, loaded together later
            await runtime.ref(Account, f"b{n}").ask(Deposit(n + 1))
    assert {kind for kind, _ in _data_classes(path)} == {"blob"}
    snapshots = _storage_classes(path, "SELECT DISTINCT typeof(state), 0 FROM snapshots")
    assert snapshots == [("blob", 0)]
    async with Runtime(SQLiteEventStore(path)) as runtime:
        state = await runtime.ref(Account, "a").state()
        others = [await runtime.ref(Account, f"b{n}").state() for n in range(5)]
        assert runtime.statistics().events_replayed == 1 + 5  # the tail after snapshot 39
    assert state.balance == 40 and state.history == [1] * 40
    assert [o.balance for o in others] == [1, 2, 3, 4, 5]


async def test_large_snapshot_states_are_stored_compressed(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with SQLiteEventStore(path, compress_over=1024) as store:
        await store.save_snapshot(SnapshotRecord("Order-1", 1, LARGE), keep=2)
        await store.save_snapshot(SnapshotRecord("Order-1", 2, SMALL), keep=2)
        loaded = await store.load_snapshot("Order-1", max_version=1)
        assert loaded is not None and loaded.state == LARGE
        assert [i.version for i in await store.list_snapshots("Order-1")] == [1, 2]
    kinds = _storage_classes(path, "SELECT typeof(state), version FROM snapshots ORDER BY 2")
    assert kinds == [("blob", 1), ("text", 2)]


async def test_inline_projections_see_compressed_events_decoded(tmp_path: Path) -> None:
    seen: list[StoredEvent] = []
    async with SQLiteEventStore(tmp_path / "events.db", compress_over=1024) as store:
        await store.append("Order-1", 0, [event("Placed", LARGE)])  # caught up on adding
        await store.add_inline_projection("view", lambda _, events: seen.extend(events))
        await store.append("Order-1", 1, [event("Placed", LARGE)])  # in the append
    assert [e.data for e in seen] == [LARGE, LARGE]


async def test_a_damaged_compressed_row_is_reported_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with SQLiteEventStore(path, compress_over=1024) as store:
        await store.append("Order-1", 0, [event("Placed", LARGE)])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET data = CAST(X'78010203' AS BLOB)")
    async with SQLiteEventStore(path) as store:
        with pytest.raises(CodecError, match=r"version 1 of stream 'Order-1'.*not zlib-compressed"):
            await collect(store.read_stream("Order-1"))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1024", True])
def test_a_bad_compress_over_is_refused_naming_it(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="compress_over must be an int >= 1"):
        SQLiteEventStore(tmp_path / "events.db", compress_over=bad)  # type: ignore[arg-type]
