"""The SQLite store's connection thread: jobs run in order on it, and it ends when closed."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

from actorsource.stores.sqlite._thread import ConnectionThread


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
