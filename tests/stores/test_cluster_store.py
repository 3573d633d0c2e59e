"""The stores' cluster tables: members' heartbeats, the shard count, shard leases with epochs,
and appends fenced by a lease (memory and PostgreSQL; SQLite has none)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actorsource import FencedError, InMemoryEventStore, SQLiteEventStore
from actorsource._timers import TimerSchedule
from actorsource.stores._base import EventStore, Fence, ShardLease

from ..conftest import (
    POSTGRES_DSN,
    make_store,
    postgres_schema,
)
from ..conftest import cluster_tables as tables
from .test_contract import collect, event


@pytest.fixture
def store(cluster_store: EventStore) -> EventStore:
    return cluster_store


async def test_members_are_live_until_their_heartbeat_expires(store: EventStore) -> None:
    cluster = tables(store)
    await cluster.heartbeat("c", "a", "127.0.0.1:1", expires_at=110.0)
    await cluster.heartbeat("c", "b", "127.0.0.1:2", expires_at=105.0)
    await cluster.heartbeat("other", "x", "127.0.0.1:3", expires_at=200.0)
    assert [m.member_id for m in await cluster.live_members("c", now=100.0)] == ["a", "b"]
    assert [m.member_id for m in await cluster.live_members("c", now=106.0)] == ["a"]
    await cluster.heartbeat("c", "b", "127.0.0.1:9", expires_at=120.0)  # it beats again
    live = await cluster.live_members("c", now=106.0)
    assert [(m.member_id, m.address) for m in live] == [("a", "127.0.0.1:1"), ("b", "127.0.0.1:9")]
    await cluster.leave("c", "a")
    assert [m.member_id for m in await cluster.live_members("c", now=106.0)] == ["b"]


async def test_the_first_member_records_the_shard_count(store: EventStore) -> None:
    cluster = tables(store)
    assert await cluster.record_shard_count("c", 16) == 16
    assert await cluster.record_shard_count("c", 64) == 16  # a later member learns it
    assert await cluster.record_shard_count("d", 64) == 64


async def test_a_shard_is_acquired_only_when_free_or_expired_with_its_epoch_raised(
    store: EventStore,
) -> None:
    cluster = tables(store)
    taken = await cluster.acquire_shards("c", "a", [0, 1], now=100.0, expires_at=110.0)
    assert taken == [ShardLease(0, "a", 1, 110.0), ShardLease(1, "a", 1, 110.0)]
    # held by a live lease: not taken, not even by its owner
    assert await cluster.acquire_shards("c", "b", [0, 1], now=105.0, expires_at=115.0) == []
    assert await cluster.acquire_shards("c", "a", [0], now=105.0, expires_at=115.0) == []
    # expired: taken over at the next epoch
    taken = await cluster.acquire_shards("c", "b", [0, 2], now=111.0, expires_at=121.0)
    assert taken == [ShardLease(0, "b", 2, 121.0), ShardLease(2, "b", 1, 121.0)]
    assert await cluster.shard_leases("c") == [
        ShardLease(0, "b", 2, 121.0),
        ShardLease(1, "a", 1, 110.0),
        ShardLease(2, "b", 1, 121.0),
    ]
    assert await cluster.shard_leases("other") == []


async def test_only_the_owner_at_its_epoch_renews_or_releases(store: EventStore) -> None:
    cluster = tables(store)
    await cluster.acquire_shards("c", "a", [0, 1], now=100.0, expires_at=110.0)
    assert await cluster.renew_shards("c", "a", {0: 1, 1: 1}, expires_at=120.0) == [0, 1]
    assert await cluster.renew_shards("c", "b", {0: 1}, expires_at=130.0) == []
    assert await cluster.renew_shards("c", "a", {0: 2}, expires_at=130.0) == []  # a wrong epoch
    assert await cluster.acquire_shards("c", "b", [0], now=115.0, expires_at=125.0) == []
    assert await cluster.release_shards("c", "b", {0: 1}) == []
    assert await cluster.release_shards("c", "a", {0: 1}) == [0]
    # released: another member takes it at once, at the next epoch
    taken = await cluster.acquire_shards("c", "b", [0], now=115.0, expires_at=125.0)
    assert taken == [ShardLease(0, "b", 2, 125.0)]
    assert await cluster.renew_shards("c", "a", {0: 1}, expires_at=130.0) == []


async def test_a_fenced_append_is_stored_while_its_lease_holds(store: EventStore) -> None:
    cluster = tables(store)
    await cluster.acquire_shards("c", "a", [3], now=100.0, expires_at=110.0)
    fence = Fence("c", 3, 1, "a")
    result = await cluster.submit_fenced_append("Account-1", 0, [event("Opened")], fence)
    assert result.version == 1
    assert [e.type for e in await collect(store.read_stream("Account-1"))] == ["Opened"]


async def test_a_fenced_append_after_a_takeover_is_refused_and_stores_nothing(
    store: EventStore,
) -> None:
    cluster = tables(store)
    await cluster.acquire_shards("c", "a", [3], now=100.0, expires_at=110.0)
    await cluster.acquire_shards("c", "b", [3], now=111.0, expires_at=121.0)  # a took too long
    old = Fence("c", 3, 1, "a")
    with pytest.raises(
        FencedError, match="shard 3's lease at epoch 1, but the shard is at epoch 2"
    ):
        await cluster.submit_fenced_append("Account-1", 0, [event("Opened")], old)
    # released, never leased: refused too
    await cluster.release_shards("c", "b", {3: 2})
    with pytest.raises(FencedError) as raised:
        await cluster.submit_fenced_append("Account-1", 0, [event("Opened")], Fence("c", 3, 2, "b"))
    assert raised.value.actual == 2
    with pytest.raises(FencedError, match="has no lease"):
        await cluster.submit_fenced_append("Account-1", 0, [event("Opened")], Fence("c", 9, 1, "a"))
    assert await collect(store.read_stream("Account-1")) == []
    # the unfenced path is unchanged
    assert (await store.append("Account-1", 0, [event("Opened")])).version == 1


async def test_an_append_with_timers_is_fenced_in_its_transaction(store: EventStore) -> None:
    cluster = tables(store)
    timers = store.capabilities().timers
    assert timers is not None
    due = datetime(2030, 1, 1, tzinfo=UTC)

    def tick(key: str) -> TimerSchedule:
        return TimerSchedule("Account-1", key, "Account-1", "Tick", {}, due, None, "once")

    await cluster.acquire_shards("c", "a", [3], now=100.0, expires_at=110.0)
    stored = await cluster.append_fenced_with_timers(
        "Account-1", 0, [event("Opened")], [tick("held")], Fence("c", 3, 1, "a")
    )
    assert stored.version == 1
    await cluster.acquire_shards("c", "b", [3], now=111.0, expires_at=121.0)  # a took too long
    with pytest.raises(FencedError, match="at epoch 1, but the shard is at epoch 2"):
        await cluster.append_fenced_with_timers(
            "Account-1", 1, [event("Renamed")], [tick("late")], Fence("c", 3, 1, "a")
        )
    # nothing of the refused append: neither its event nor its timer
    assert [e.type for e in await collect(store.read_stream("Account-1"))] == ["Opened"]
    assert [t.key for t in await timers.list_timers()] == ["held"]
    # the new owner's fence holds
    stored = await cluster.append_fenced_with_timers(
        "Account-1", 1, [event("Renamed")], [tick("new")], Fence("c", 3, 2, "b")
    )
    assert stored.version == 2
    assert sorted(t.key for t in await timers.list_timers()) == ["held", "new"]


async def test_in_one_batch_only_the_fenced_off_append_is_refused(store: EventStore) -> None:
    cluster = tables(store)
    await cluster.acquire_shards("c", "a", [1, 2], now=100.0, expires_at=110.0)
    await cluster.acquire_shards("c", "b", [2], now=111.0, expires_at=121.0)
    # queued in one step of the loop: one batch for PostgreSQL's writer
    futures = [
        cluster.submit_fenced_append("A-1", 0, [event("Opened")], Fence("c", 1, 1, "a")),
        cluster.submit_fenced_append("A-2", 0, [event("Opened")], Fence("c", 2, 1, "a")),
        cluster.submit_fenced_append("A-3", 0, [event("Opened")], Fence("c", 2, 2, "b")),
    ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["AppendResult", "FencedError", "AppendResult"]
    assert sorted({e.stream_id for e in await collect(store.read_all())}) == ["A-1", "A-3"]


async def test_two_stores_on_one_schema_see_one_lease(cluster_kind: str, tmp_path: Path) -> None:
    if cluster_kind == "memory":
        pytest.skip("one memory store is one database")
    async with make_store(cluster_kind, tmp_path) as one, make_store(cluster_kind, tmp_path) as two:
        await tables(one).acquire_shards("c", "a", [0], now=100.0, expires_at=110.0)
        assert await tables(two).acquire_shards("c", "b", [0], now=105.0, expires_at=115.0) == []
        await tables(two).acquire_shards("c", "b", [0], now=111.0, expires_at=121.0)
        with pytest.raises(FencedError):
            await tables(one).submit_fenced_append(
                "A-1", 0, [event("Opened")], Fence("c", 0, 1, "a")
            )
        assert await collect(two.read_stream("A-1")) == []


async def test_members_joining_at_once_all_learn_the_first_shard_count(
    cluster_kind: str, tmp_path: Path
) -> None:
    if cluster_kind == "memory":
        pytest.skip("one memory store is one database")
    stores = [make_store(cluster_kind, tmp_path) for _ in range(4)]
    for opened in stores:
        await opened.open()
    try:
        counts = await asyncio.gather(
            *(tables(s).record_shard_count("c", 8 * (i + 1)) for i, s in enumerate(stores))
        )
        assert len(set(counts)) == 1 and counts[0] in (8, 16, 24, 32)
    finally:
        for opened in stores:
            await opened.close()


async def test_sqlite_declares_no_cluster_tables(tmp_path: Path) -> None:
    async with SQLiteEventStore(tmp_path / "e.db") as store:
        assert store.capabilities().cluster is None
    assert InMemoryEventStore().capabilities().cluster is not None


@pytest.mark.skipif(not POSTGRES_DSN, reason="needs PostgreSQL")
async def test_a_postgres_schema_of_version_4_is_upgraded_with_the_cluster_tables(
    tmp_path: Path,
) -> None:
    import asyncpg

    from actorsource import PostgresEventStore
    from actorsource.stores.postgres import SCHEMA_VERSION
    from actorsource.stores.postgres.schema import _channel, _lock_key, _migrations

    schema = postgres_schema(tmp_path)
    steps = _migrations(schema, _lock_key("append", schema), _channel(schema))
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        for statement in steps[1] + steps[2] + steps[3] + steps[4]:
            await conn.execute(statement)
        await conn.execute(f'INSERT INTO "{schema}".actorsource_schema (version) VALUES (4)')
        async with PostgresEventStore(POSTGRES_DSN, schema=schema) as store:
            assert store.schema_version == SCHEMA_VERSION  # through 5, the cluster tables
            await store.append("A-1", 0, [event("Opened")])
            cluster = tables(store)
            await cluster.acquire_shards("c", "a", [0], now=1.0, expires_at=2.0)
            fenced = await cluster.submit_fenced_append(
                "A-1", 1, [event("Closed")], Fence("c", 0, 1, "a")
            )
            assert fenced.version == 2
        version = await conn.fetchval(f'SELECT version FROM "{schema}".actorsource_schema')
        assert version == SCHEMA_VERSION
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
