"""Snapshots under control: on demand, keep-N retention, the time-based policy, and listing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from actorsource import (
    EventStore,
    Runtime,
    SnapshotError,
    SnapshotEvery,
    SnapshotInfo,
    SnapshotInterval,
    SnapshotRecord,
)

from .clock import ManualClock
from .domain import Account, Deposit


async def _versions(store: EventStore, stream_id: str = "Account-a") -> list[int]:
    return [info.version for info in await store.list_snapshots(stream_id)]


async def test_snapshot_on_demand_holds_the_state_after_the_messages_sent_before_it(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        for amount in (1, 2, 3):
            await ref.tell(Deposit(amount))  # not awaited: the snapshot queues behind them
        assert await ref.snapshot() == 3
        assert runtime.statistics().snapshots_saved == 1
    snapshot = await store.load_snapshot("Account-a")
    assert snapshot is not None and snapshot.version == 3
    assert snapshot.state == {"state": {"balance": 6, "history": [1, 2, 3]}}


async def test_snapshot_of_a_stream_with_no_events_is_refused_and_saves_nothing(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "nobody")
        with pytest.raises(SnapshotError, match="'Account-nobody': the stream has no events"):
            await ref.snapshot()
        # the actor goes on
        await ref.ask(Deposit(5))
        assert await ref.snapshot() == 1
    assert await _versions(store, "Account-nobody") == [1]


async def test_a_later_load_starts_from_the_on_demand_snapshot(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        for _ in range(5):
            await ref.ask(Deposit(1))
        assert await ref.snapshot() == 5
        await ref.ask(Deposit(1))
        await ref.ask(Deposit(1))
    async with Runtime(store) as runtime:  # a new runtime on the same (still open) store
        state = await runtime.ref(Account, "a").state()
        assert state.balance == 7
        assert runtime.statistics().events_replayed == 2


async def anyio_gather(*calls: Any) -> None:
    """Run the calls concurrently, each in a task of its own."""
    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(_await, call)


async def _await(call: Any) -> None:
    await call


async def test_a_save_with_keep_prunes_the_older_snapshots(store: EventStore) -> None:
    for version in range(1, 6):
        await store.save_snapshot(SnapshotRecord("Account-a", version, {"v": version}))
    await store.save_snapshot(SnapshotRecord("Account-b", 1, {"v": 1}))
    assert await _versions(store) == [1, 2, 3, 4, 5]
    await store.save_snapshot(SnapshotRecord("Account-a", 6, {"v": 6}), keep=2)
    assert await _versions(store) == [5, 6]
    assert await _versions(store, "Account-b") == [1]  # other streams keep theirs
    # re-saving an older version keeps the latest ones by version, not by save time
    await store.save_snapshot(SnapshotRecord("Account-a", 4, {"v": 4}), keep=2)
    assert await _versions(store) == [5, 6]


async def test_saves_of_one_stream_at_once_keep_no_more_than_asked(store: EventStore) -> None:
    # each save prunes in its transaction: two at once must not each miss the other's snapshot
    await anyio_gather(
        *(
            store.save_snapshot(SnapshotRecord("Account-a", version, {"v": version}), keep=2)
            for version in range(1, 21)
        )
    )
    assert await _versions(store) == [19, 20]


@pytest.mark.parametrize("keep", [0, -1, 1.5, "2", True, 2**63])
async def test_a_bad_keep_is_refused_and_nothing_changes(store: EventStore, keep: object) -> None:
    await store.save_snapshot(SnapshotRecord("Account-a", 1, {"v": 1}))
    with pytest.raises(ValueError, match=r"keep must be an int from 1 to 9223372036854775807"):
        await store.save_snapshot(SnapshotRecord("Account-a", 2, {"v": 2}), keep=keep)  # type: ignore[arg-type]
    assert await _versions(store) == [1]


async def test_list_snapshots_gives_versions_and_times_and_each_can_be_loaded(
    store: EventStore,
) -> None:
    before = datetime.now(UTC)
    for version in (3, 1, 2):
        await store.save_snapshot(SnapshotRecord("Account-a", version, {"v": version}, 7))
    infos = await store.list_snapshots("Account-a")
    assert [i.version for i in infos] == [1, 2, 3]
    assert all(isinstance(i, SnapshotInfo) and i.stream_id == "Account-a" for i in infos)
    assert all(i.schema_version == 7 for i in infos)
    assert all(i.recorded_at.tzinfo is not None for i in infos)
    assert all(i.recorded_at >= before.replace(microsecond=0) for i in infos)
    # a rollback: the snapshot at or before a version
    older = await store.load_snapshot("Account-a", max_version=infos[1].version)
    assert older is not None and older.state == {"v": 2}
    assert await store.list_snapshots("Account-unknown") == []
    with pytest.raises(ValueError, match="stream id"):
        await store.list_snapshots("")


async def test_snapshot_every_with_keep_keeps_the_last_n_per_stream(store: EventStore) -> None:
    async with Runtime(store, snapshot=SnapshotEvery(2, keep=2)) as runtime:
        ref = runtime.ref(Account, "a")
        for _ in range(10):
            await ref.ask(Deposit(1))
    assert await _versions(store) == [8, 10]
    async with Runtime(store, snapshot=SnapshotEvery(100, keep=2)) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))
        assert await ref.snapshot() == 11  # on demand, under the same retention
    assert await _versions(store) == [10, 11]


async def test_snapshot_interval_saves_at_most_one_snapshot_per_interval(
    store: EventStore,
) -> None:
    clock = ManualClock()
    async with Runtime(store, snapshot=SnapshotInterval(60.0, clock=clock)) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))  # v1: the interval starts
        clock.advance(30)
        await ref.ask(Deposit(1))  # v2: too soon
        clock.advance(31)
        await ref.ask(Deposit(1))  # v3: due
        await ref.ask(Deposit(1))  # v4: too soon again
        clock.advance(59)
        await ref.ask(Deposit(1))  # v5: 59 s after v3
        clock.advance(1)
        await ref.ask(Deposit(1))  # v6: due
        clock.advance(600)  # time passes without appends: nothing to snapshot
    assert await _versions(store) == [3, 6]


async def test_an_on_demand_snapshot_restarts_the_interval(store: EventStore) -> None:
    clock = ManualClock()
    policy = SnapshotInterval(60.0, keep=3, clock=clock)
    async with Runtime(store, snapshot=policy) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))  # v1: the interval starts
        clock.advance(50)
        await ref.ask(Deposit(1))  # v2
        assert await ref.snapshot() == 2
        clock.advance(50)
        await ref.ask(Deposit(1))  # v3: 100 s after v1, 50 s after the snapshot
        clock.advance(10)
        await ref.ask(Deposit(1))  # v4: due
    assert await _versions(store) == [2, 4]


def test_snapshot_policies_refuse_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="SnapshotEvery: keep must be an int >= 1"):
        SnapshotEvery(10, keep=0)
    for seconds in (0, -1.0, float("nan"), True, "60"):
        with pytest.raises(ValueError, match="SnapshotInterval: seconds must be > 0"):
            SnapshotInterval(seconds)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SnapshotInterval: keep must be an int >= 1"):
        SnapshotInterval(60.0, keep=-2)
    with pytest.raises(TypeError, match="SnapshotEvery or a SnapshotInterval"):
        Runtime(None, snapshot=10)  # type: ignore[arg-type]
    assert SnapshotEvery(10).keep is None and SnapshotInterval(1.5).keep is None
