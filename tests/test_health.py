"""The health check: store reachable, writer not stalled, projections' lag under a limit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio

from actorsource import EventStore, Runtime, SQLiteEventStore

from .domain import Account, Deposit
from .test_projections import DepositsOnly, Flaky


async def test_a_working_runtime_is_healthy_and_says_what_it_checked(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        runtime.add_projection(DepositsOnly())
        await runtime.ref(Account, "a").ask(Deposit(1))
        await runtime.wait_for_projection(DepositsOnly)

        health = await runtime.health()

    assert health.healthy
    assert [check.name for check in health.checks] == [
        "store",
        "writer",
        "storage",
        "projection DepositsOnly",
    ]
    assert "head position 1" in health.checks[0].detail


async def test_a_failing_projection_makes_the_runtime_unhealthy(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(13))  # Flaky cannot handle 13
        runtime.add_projection(Flaky())
        with anyio.fail_after(10):
            while runtime.statistics().projections[0].state != "failing":  # noqa: ASYNC110
                await anyio.sleep(0.01)  # its retry timer drives it

        health = await runtime.health()

    assert not health.healthy
    (check,) = [c for c in health.checks if c.name == "projection Flaky"]
    assert not check.ok
    assert "cannot handle 13" in check.detail


async def test_a_stalled_writer_makes_the_runtime_unhealthy_until_it_moves(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with Runtime(SQLiteEventStore(path)) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(1))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(runtime.ref(Account, "a").ask, Deposit(2))
                store = runtime.store
                assert isinstance(store, SQLiteEventStore)
                with anyio.fail_after(10):
                    while store.writer_lag() < 0.2:  # noqa: ASYNC110  # time is what is measured
                        await anyio.sleep(0.02)

                stalled = await runtime.health(max_writer_lag=0.1)

                blocker.execute("ROLLBACK")  # the lock goes: the append commits
        finally:
            blocker.close()
        recovered = await runtime.health(max_writer_lag=0.1)

    (writer,) = [c for c in stalled.checks if c.name == "writer"]
    assert not stalled.healthy
    assert not writer.ok
    assert "limit 0.1 s" in writer.detail
    assert recovered.healthy


async def test_an_unreachable_store_fails_the_store_check(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    async with Runtime(store) as runtime:
        await store.close()  # as if the database went away

        health = await runtime.health()

    assert not health.healthy
    assert [(c.name, c.ok) for c in health.checks] == [
        ("store", False),
        ("writer", False),
        ("storage", False),
    ]
    assert "StoreError" in health.checks[0].detail
