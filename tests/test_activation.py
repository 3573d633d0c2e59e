"""Activating an actor through the SQLite store's callback load (no task): limits, failures,
long streams. (The task path, for stores without that call, is covered in test_runtime.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

import actorsource.stores.sqlite.reads as reads_module
from actorsource import ActorFailedError, Backoff, Runtime, SQLiteEventStore

from .clock import ManualClock
from .domain import Account, Deposit


async def test_a_failing_callback_load_backs_off_then_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_latest = reads_module._latest
    failures = ["Account-a"]

    def latest(conn: sqlite3.Connection, stream_id: str, page_size: int) -> Any:
        if stream_id in failures:
            failures.remove(stream_id)
            raise sqlite3.OperationalError("disk I/O error")
        return real_latest(conn, stream_id, page_size)

    # loads go stream by stream (as when a job's one statement cannot run), and one fails
    monkeypatch.setattr(reads_module, "_latest_many", lambda *args: None)
    monkeypatch.setattr(reads_module, "_latest", latest)
    clock = ManualClock()
    async with (
        SQLiteEventStore(tmp_path / "a.db") as store,
        Runtime(store, supervision=Backoff(base=0.05, clock=clock)) as runtime,
    ):
        ref = runtime.ref(Account, "a")
        with pytest.raises(ActorFailedError, match=r"loading the aggregate failed: .*disk I/O"):
            await ref.ask(Deposit(1))
        with pytest.raises(ActorFailedError, match="failed 1 time"):
            await ref.ask(Deposit(2))  # within the backoff: fails at once
        await runtime.ref(Account, "other").ask(Deposit(5))  # the others are served
        clock.advance(0.049)
        with pytest.raises(ActorFailedError, match="failed 1 time"):
            await ref.ask(Deposit(4))  # 1 ms of the backoff left
        clock.advance(0.001)  # the backoff after one failure (50 ms) has passed
        await ref.ask(Deposit(3))
        assert (await ref.state()).history == [3]
        assert runtime.statistics().actor_failures == 1


async def test_callback_loads_are_limited_in_number(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "a.db") as store:
        real_load_then = store.load_latest_then
        in_flight = peak = 0

        def counting_load_then(stream_id: str, on_loaded: Any) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)

            def loaded(outcome: Any) -> None:
                nonlocal in_flight
                in_flight -= 1
                on_loaded(outcome)

            real_load_then(stream_id, loaded)

        store.load_latest_then = counting_load_then  # type: ignore[method-assign]
        async with Runtime(store, max_activations=3) as runtime, anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(runtime.ref(Account, f"cold-{n}").ask, Deposit(1))
        assert peak == 3
        assert runtime.statistics().activations == 30
        assert await store.head_position() == 30


async def test_a_long_stream_loads_its_later_pages_and_a_bad_event_there_fails_clearly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    async with SQLiteEventStore(path, read_page_size=5) as store:
        async with Runtime(store) as runtime:
            for name in ("good", "bad"):
                for amount in range(1, 13):
                    await runtime.ref(Account, name).ask(Deposit(amount))
        with sqlite3.connect(path) as raw:  # an event on the second page no longer decodes
            raw.execute(
                'UPDATE events SET data = \'{"amount": "eight"}\' '
                "WHERE stream_id = 'Account-bad' AND version = 8"
            )
        async with Runtime(store) as runtime:
            good = await runtime.ref(Account, "good").state()
            assert good.history == list(range(1, 13))
            assert runtime.statistics().events_replayed == 12
            with pytest.raises(ActorFailedError) as caught:
                await runtime.ref(Account, "bad").ask(Deposit(1))
    assert "'Account-bad'" in str(caught.value) and "version 8" in str(caught.value)


async def test_an_aggregate_longer_than_a_load_jobs_page_replays_every_event(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    async with SQLiteEventStore(path) as store:
        async with Runtime(store) as runtime:
            ref = runtime.ref(Account, "long")
            for amount in range(1, 301):  # more than the 128 events a load job reads
                await ref.ask(Deposit(amount))
        async with Runtime(store) as runtime:
            state = await runtime.ref(Account, "long").state()
            assert state.history == list(range(1, 301))
            assert runtime.statistics().events_replayed == 300
