"""The store's read side, on every store: filtered global reads, time ranges, checkpoints,
commit notifications, and read-model transactions (exactly-once and inline projections)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource import (
    EventStore,
    NaiveDatetimeError,
    SQLiteEventStore,
    StoredEvent,
    StoreError,
    WaitTimeoutError,
    subscribe,
)
from actorsource.stores.sqlite import SCHEMA_VERSION

from ..conftest import transactional
from .test_contract import collect, event, everything, positions


async def _fill(store: EventStore) -> None:
    await store.append("Account-1", 0, [event("Opened"), event("Deposited")])
    await store.append("Order-7", 0, [event("Placed")])
    await store.append("Account-2", 0, [event("Opened")])
    await store.append("Accounting-1", 0, [event("Deposited")])


async def test_read_all_filters_by_stored_type(store: EventStore) -> None:
    await _fill(store)

    found = await collect(store.read_all(types=["Deposited", "Placed"]))

    assert [(e.type, e.position) for e in found] == [
        ("Deposited", 2),
        ("Placed", 3),
        ("Deposited", 5),
    ]


async def test_read_all_filters_by_category_up_to_the_dash(store: EventStore) -> None:
    await _fill(store)

    found = await collect(store.read_all(categories=["Account"]))

    # "Accounting-1" is another category, though it starts with "Account"
    assert [e.stream_id for e in found] == ["Account-1", "Account-1", "Account-2"]


async def test_read_all_filters_combine_with_a_position_range(store: EventStore) -> None:
    await _fill(store)

    found = await collect(store.read_all(2, to_position=4, categories=["Account", "Order"]))

    assert positions(found) == [2, 3, 4]
    assert await collect(store.read_all(types=[])) == []


async def test_read_all_refuses_a_bare_str_as_a_filter(store: EventStore) -> None:
    with pytest.raises(ValueError, match="collection of str, got the str 'Deposited'"):
        await collect(store.read_all(types="Deposited"))


async def test_reads_by_time_range_keep_events_recorded_in_it(store: EventStore) -> None:
    await store.append("Account-1", 0, [event()])
    (first,) = await everything(store)
    await store.append("Account-1", 1, [event()])
    second = (await everything(store))[1]
    assert second.recorded_at >= first.recorded_at

    since_second = await collect(store.read_all(since=second.recorded_at))
    until_second = await collect(store.read_stream("Account-1", until=second.recorded_at))
    window = await collect(
        store.read_stream(
            "Account-1",
            since=first.recorded_at - timedelta(hours=1),
            until=first.recorded_at + timedelta(hours=1),
        )
    )

    assert second.position in positions(since_second)
    if second.recorded_at > first.recorded_at:
        assert positions(since_second) == [2]
        assert positions(until_second) == [1]
    assert len(window) == 2


async def test_a_naive_datetime_is_refused_by_name(store: EventStore) -> None:
    with pytest.raises(NaiveDatetimeError, match="since must be a timezone-aware datetime"):
        await collect(store.read_all(since=datetime(2026, 1, 1)))


async def test_stream_version_at_a_time_is_the_version_then(store: EventStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    await store.append("Account-1", 0, [event(), event()])
    (_, last) = await everything(store)

    assert await store.stream_version("Account-1", at=before) == 0
    assert await store.stream_version("Account-1", at=last.recorded_at) == 2
    assert await store.stream_version("Account-1", at=datetime.now(UTC) + timedelta(days=1)) == 2


async def test_head_position_is_the_last_position(store: EventStore) -> None:
    assert await store.head_position() == 0
    await _fill(store)
    assert await store.head_position() == 5


async def test_checkpoints_start_at_0_and_keep_the_last_saved_position(store: EventStore) -> None:
    assert await store.load_checkpoint("balances") == 0

    await store.save_checkpoint("balances", 7)
    await store.save_checkpoint("balances", 9)
    await store.save_checkpoint("activity", 3)

    assert await store.load_checkpoint("balances") == 9
    assert await store.load_checkpoint("activity") == 3
    assert await store.list_checkpoints() == {"activity": 3, "balances": 9}


async def test_a_checkpoint_removed_is_gone_and_the_others_stay(store: EventStore) -> None:
    delete = store.capabilities().delete_checkpoint
    assert delete is not None
    await store.save_checkpoint("retired", 7)
    await store.save_checkpoint("balances", 9)

    assert await delete("retired") is True
    assert await delete("retired") is False  # none any more
    assert await store.list_checkpoints() == {"balances": 9}
    assert await store.load_checkpoint("retired") == 0
    with pytest.raises(ValueError, match="checkpoint name"):
        await delete("")


@pytest.mark.parametrize(
    ("name", "position", "problem"),
    [("", 1, "checkpoint name"), (7, 1, "checkpoint name"), ("p", -1, "'p': a position")],
)
async def test_a_bad_checkpoint_is_refused_by_name(
    store: EventStore, name: Any, position: Any, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        await store.save_checkpoint(name, position)


async def test_wait_for_events_wakes_at_the_commit_of_an_append(store: EventStore) -> None:
    woke: list[int] = []

    async def wait() -> None:
        await store.wait_for_events(0, timeout=60)
        woke.append(await store.head_position())

    with anyio.fail_after(10):  # far below the 60 s poll interval: woken, not timed out
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert woke == []
            await store.append("Account-1", 0, [event()])

    assert woke == [1]


async def test_wait_for_events_returns_at_once_when_events_are_already_there(
    store: EventStore,
) -> None:
    await store.append("Account-1", 0, [event()])
    await store.head_position()

    with anyio.fail_after(10):
        await store.wait_for_events(0, timeout=60)


async def test_wait_for_events_raises_a_timeout_error_naming_where_the_log_stood(
    store: EventStore,
) -> None:
    await store.append("Account-1", 0, [event()])
    with anyio.fail_after(10), pytest.raises(WaitTimeoutError) as raised:
        await store.wait_for_events(1, timeout=0.01)
    assert isinstance(raised.value, TimeoutError)
    assert (raised.value.target, raised.value.reached) == (2, 1)
    assert "did not reach position 2 within 0.01 s: it stood at 1" in str(raised.value)


async def test_closing_the_store_wakes_its_waiters_with_a_store_error(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    await store.open()
    failed: list[BaseException] = []

    async def wait() -> None:
        try:
            await store.wait_for_events(0, timeout=60)
        except StoreError as exc:
            failed.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await store.close()
    assert len(failed) == 1
    assert "closed" in str(failed[0])
    with pytest.raises(StoreError):
        await store.wait_for_events(0, timeout=60)


# -- read-model transactions ---------------------------------------------------------------------


async def test_every_store_declares_its_read_model_transactions_in_its_capabilities(
    store: EventStore,
) -> None:
    capabilities = store.capabilities()
    assert capabilities.transactional is store
    # PostgreSQL awaits async work in its transactions; SQLite runs plain work on its thread
    assert capabilities.async_transactions is (type(store).__name__ == "PostgresEventStore")


async def test_commit_with_checkpoint_runs_the_work_and_moves_the_checkpoint(
    store: EventStore,
) -> None:
    store = transactional(store)
    seen: list[Any] = []

    result = await store.commit_with_checkpoint("view", 4, lambda tx: seen.append(tx) or "done")

    assert result == "done"
    assert len(seen) == 1
    assert await store.load_checkpoint("view") == 4


async def test_commit_with_checkpoint_keeps_the_checkpoint_when_the_work_fails(
    store: EventStore,
) -> None:
    store = transactional(store)
    await store.save_checkpoint("view", 2)

    def fail(_: Any) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await store.commit_with_checkpoint("view", 4, fail)

    assert await store.load_checkpoint("view") == 2


async def test_an_inline_projection_sees_every_event_once_from_its_checkpoint(
    store: EventStore,
) -> None:
    store = transactional(store)
    await store.append("Account-1", 0, [event("Opened")])  # before the projection existed
    seen: list[StoredEvent] = []
    await store.add_inline_projection("inline", lambda _tx, events: seen.extend(events))
    assert [e.type for e in seen] == ["Opened"]  # caught up when added

    await store.append("Account-1", 1, [event("Deposited"), event("Deposited")])
    await store.append("Account-2", 0, [event("Opened")])
    store.remove_inline_projection("inline")
    await store.append("Account-2", 1, [event("Closed")])

    assert [(e.stream_id, e.version, e.type) for e in seen] == [
        ("Account-1", 1, "Opened"),
        ("Account-1", 2, "Deposited"),
        ("Account-1", 3, "Deposited"),
        ("Account-2", 1, "Opened"),
    ]
    assert positions(seen) == [1, 2, 3, 4]
    assert await store.load_checkpoint("inline") == 4


async def test_a_failing_inline_projection_fails_the_append_and_stores_nothing(
    store: EventStore,
) -> None:
    store = transactional(store)
    await store.append("Account-1", 0, [event()])

    def refuse(_tx: Any, events: list[StoredEvent]) -> None:
        if any(e.type == "Poison" for e in events):
            raise ValueError("cannot project Poison")

    await store.add_inline_projection("strict", refuse)

    with pytest.raises(StoreError, match=r"inline projection 'strict' failed.*Poison"):
        await store.append("Account-1", 1, [event(), event("Poison")])

    assert positions(await everything(store)) == [1]
    assert await store.stream_version("Account-1") == 1
    assert await store.load_checkpoint("strict") == 1  # the event before it was added
    await store.append("Account-1", 1, [event()])  # the store goes on
    assert await store.load_checkpoint("strict") == 2


# -- SQLite: read models in the same file ------------------------------------------------------


async def test_sqlite_read_model_writes_commit_with_the_checkpoint_or_not_at_all(
    tmp_path: Path,
) -> None:
    async with SQLiteEventStore(tmp_path / "events.db") as store:

        def create(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE balances (account TEXT PRIMARY KEY, amount INTEGER)")

        def write_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO balances VALUES ('a', 10)")
            raise RuntimeError("handler failed after writing")

        await store.commit_with_checkpoint("balances", 0, create)
        with pytest.raises(RuntimeError, match="after writing"):
            await store.commit_with_checkpoint("balances", 5, write_then_fail)
        await store.commit_with_checkpoint(
            "balances", 6, lambda conn: conn.execute("INSERT INTO balances VALUES ('b', 1)")
        )

    with sqlite3.connect(tmp_path / "events.db") as conn:
        assert conn.execute("SELECT account, amount FROM balances").fetchall() == [("b", 1)]
        assert conn.execute("SELECT position FROM checkpoints").fetchall() == [(6,)]


async def test_sqlite_inline_projection_writes_roll_back_with_a_refused_append(
    tmp_path: Path,
) -> None:
    async with SQLiteEventStore(tmp_path / "events.db") as store:
        await store.commit_with_checkpoint(
            "count", 0, lambda conn: conn.execute("CREATE TABLE counts (n INTEGER)")
        )

        def count(conn: sqlite3.Connection, events: list[StoredEvent]) -> None:
            conn.executemany("INSERT INTO counts VALUES (?)", [(e.position,) for e in events])
            if any(e.type == "Poison" for e in events):
                raise ValueError("poison")

        await store.add_inline_projection("count", count)
        await store.append("Account-1", 0, [event()])
        with pytest.raises(StoreError, match="poison"):
            await store.append("Account-1", 1, [event("Poison")])
        await store.append("Account-1", 1, [event()])

    with sqlite3.connect(tmp_path / "events.db") as conn:
        assert conn.execute("SELECT n FROM counts ORDER BY n").fetchall() == [(1,), (2,)]


async def test_a_version_1_sqlite_file_is_upgraded_to_hold_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with SQLiteEventStore(path) as store:
        await store.append("Account-1", 0, [event()])
    with sqlite3.connect(path) as conn:  # what version 1 of the schema was
        conn.execute("DROP TABLE checkpoints")
        conn.execute("PRAGMA user_version = 1")

    async with SQLiteEventStore(path) as store:
        await store.save_checkpoint("view", 1)
        assert await store.load_checkpoint("view") == 1
        assert positions(await everything(store)) == [1]

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_another_process_appends_are_seen_by_polling_not_by_notification(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with SQLiteEventStore(path) as reader, SQLiteEventStore(path) as writer:
        await writer.append("Account-1", 0, [event()])

        with anyio.fail_after(10):
            with pytest.raises(WaitTimeoutError):  # not woken: the poll interval ends
                await reader.wait_for_events(0, timeout=0.01)
        assert positions(await everything(reader)) == [1]
        assert await reader.head_position() == 1


async def test_list_streams_gives_each_streams_version_and_last_write(store: EventStore) -> None:
    await _fill(store)
    last = (await everything(store))[-1]

    streams = await store.list_streams()
    accounts = await store.list_streams("Account")

    assert [(s.stream_id, s.version) for s in streams] == [
        ("Account-1", 2),
        ("Account-2", 1),
        ("Accounting-1", 1),
        ("Order-7", 1),
    ]
    assert streams[2].last_recorded_at == last.recorded_at
    assert [s.stream_id for s in accounts] == ["Account-1", "Account-2"]


async def test_a_subscription_catches_up_then_follows_live_without_gap_or_repeat(
    store: EventStore,
) -> None:
    await _fill(store)  # 5 events of history
    seen: list[StoredEvent] = []
    caught_up = anyio.Event()

    async def follow() -> None:
        async for stored in subscribe(store, 2, poll_interval=60):
            seen.append(stored)
            if stored.position == 5:
                caught_up.set()
            if len(seen) == 7:
                return

    with anyio.fail_after(10):  # live events wake it: far below the 60 s poll
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await caught_up.wait()
            assert positions(seen) == [2, 3, 4, 5]
            for n in range(3):
                await store.append("Live-1", n, [event()])

    assert positions(seen) == [2, 3, 4, 5, 6, 7, 8]


async def test_a_subscription_filters_by_type_and_category(store: EventStore) -> None:
    await _fill(store)
    found: list[StoredEvent] = []
    async for stored in subscribe(store, types=["Opened"], categories=["Account"]):
        found.append(stored)
        if len(found) == 2:
            break
    assert [(e.stream_id, e.type) for e in found] == [
        ("Account-1", "Opened"),
        ("Account-2", "Opened"),
    ]


async def test_a_subscription_refuses_a_position_below_1(store: EventStore) -> None:
    with pytest.raises(ValueError, match="from_position must be an int >= 1, got 0"):
        await collect(subscribe(store, 0))
