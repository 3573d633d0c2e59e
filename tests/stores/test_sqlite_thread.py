"""The SQLite store's connection thread: jobs run in order on it, and it ends when closed."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

from actorsource import SQLiteEventStore
from actorsource.stores.sqlite._thread import ConnectionThread

from .test_contract import event


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


async def test_jobs_run_on_the_connection_thread_and_answer_the_loop(tmp_path: Path) -> None:
    conn = await ConnectionThread.connect(tmp_path / "t.db", busy_timeout=1.0, name="t-run")
    try:
        await conn.execute("CREATE TABLE t (x)")
        await conn.execute("INSERT INTO t VALUES (?)", (41,))
        assert await conn.execute_fetchall("SELECT x + 1 FROM t") == [(42,)]
        assert await conn.run(threading.current_thread) is threads_named("t-run")[0]
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await conn.execute_fetchall("SELECT * FROM missing")
        assert await conn.execute_fetchall("SELECT count(*) FROM t") == [(1,)]  # it goes on
    finally:
        await conn.close()


async def test_a_closed_connection_thread_has_ended_and_refuses_jobs(tmp_path: Path) -> None:
    conn = await ConnectionThread.connect(tmp_path / "t.db", busy_timeout=1.0, name="t-close")
    [thread] = threads_named("t-close")

    await conn.close()
    await anyio.to_thread.run_sync(thread.join, 5.0)

    assert not thread.is_alive()
    assert not conn.alive
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        await conn.execute_fetchall("SELECT 1")
    await conn.close()  # closing again is a no-op


async def test_a_failed_connect_raises_and_leaves_no_thread(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        await ConnectionThread.connect(tmp_path, busy_timeout=1.0, name="t-fail")  # a directory

    assert threads_named("t-fail") == []


async def test_a_store_whose_close_is_cancelled_still_ends_its_threads(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    async with SQLiteEventStore(path) as store:
        await store.append("s-1", 0, [event()])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock: the append waits
    before = set(threading.enumerate())
    store = SQLiteEventStore(path, busy_timeout=1.0)
    await store.open()
    pending = store.submit_append("s-1", 1, [event()])  # queued: close waits for its commit
    try:
        with anyio.move_on_after(0.05) as shutdown:  # the shutdown stops waiting for the close
            await store.close()
        assert shutdown.cancelled_caught
    finally:
        other.execute("ROLLBACK")
        other.close()
    with contextlib.suppress(Exception):
        await pending  # committed after all, or failed: either way answered
    assert not store.is_open
    started = set(threading.enumerate()) - before
    for thread in started:
        thread.join(5)  # they end once the blocked commit gives up: they are not daemons
    assert [t.name for t in started if t.is_alive()] == []
