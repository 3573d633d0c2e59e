"""How the PostgreSQL writer appends: the stream heads it has the server check, one
notification per commit, and what goes into the JSONB and exact-text columns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from actorsource import AppendResult, ConcurrencyError, PostgresEventStore, SnapshotRecord
from actorsource.stores.postgres import SCHEMA_VERSION
from actorsource.stores.postgres.plan import _Append, _jsonb_columns, _plan
from actorsource.stores.postgres.schema import _channel, _lock_key, _migrations

from ..conftest import drop_schema, postgres_schema, run_sync
from .test_contract import collect, event, everything, versions


def _append(stream_id: str, expected: int | None, count: int = 1) -> _Append:
    rows = [("E", "{}", None, "{}", None, f"{stream_id}-{expected}-{i}") for i in range(count)]
    return _Append(stream_id, expected, rows, cast("asyncio.Future[AppendResult]", None))


def test_every_stream_of_a_batch_is_checked_by_the_server_at_its_planned_head() -> None:
    known = {"known": 4, "behind": 2}
    plan = _plan(
        [
            _append("known", 4),  # the writer saw version 4 stored: maybe stale since
            _append("behind", 6),  # the writer saw 2: is the stream at 6?
            _append("unknown", 3),  # never seen
            _append("new", 0),  # nothing stored yet? (version 1 may have been archived)
            _append("anywhere", None),  # after the head the writer knows
            _append("known", 5),  # after this batch's own append: checked once, above
        ],
        {**known, "anywhere": 7},
        None,
    )

    assert list(zip(plan.check_streams, plan.check_heads, strict=True)) == [
        ("known", 4),
        ("behind", 6),
        ("unknown", 3),
        ("new", 0),
        ("anywhere", 7),
    ]
    assert plan.versions == [5, 7, 4, 1, 8, 6]


def test_facts_read_under_the_lock_need_no_check() -> None:
    plan = _plan([_append("a", 3), _append("b", 0)], {"a": 3, "b": 0}, set())

    assert plan.check_streams == []
    assert plan.versions == [4, 1]


def test_json_without_floats_goes_to_jsonb_as_it_is_and_floats_are_still_searched() -> None:
    text = '{"id":"1e5","n":[1,true,null]}'
    assert _jsonb_columns(text, {"id": "1e5", "n": [1, True, None]}) == (text, None)
    # floats JSONB would print differently keep their exact text beside the JSONB
    assert _jsonb_columns('{"x":1e16}', {"x": 1e16}) == ('{"x":1e16}', '{"x":1e16}')
    assert _jsonb_columns('{"x":-0.0}', {"x": -0.0}) == ('{"x":-0.0}', '{"x":-0.0}')
    assert _jsonb_columns('{"x":1.5}', {"x": 1.5}) == ('{"x":1.5}', None)
    # NUL, which JSONB cannot hold, only as exact text
    assert _jsonb_columns('{"s":"\\u0000"}', {"s": "\x00"}) == (None, '{"s":"\\u0000"}')


@pytest.fixture
def schema(postgres_dsn: str, tmp_path: Path) -> Iterator[str]:
    name = postgres_schema(tmp_path)
    yield name
    run_sync(drop_schema(postgres_dsn, name))


@pytest.fixture
async def raw(postgres_dsn: str) -> AsyncIterator[Any]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(postgres_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def test_a_stream_moved_by_another_store_past_the_known_head_is_checked(
    postgres_dsn: str, schema: str
) -> None:
    async with (
        PostgresEventStore(postgres_dsn, schema=schema) as one,
        PostgresEventStore(postgres_dsn, schema=schema) as other,
    ):
        await one.append("a", 0, [event()])  # one knows "a" at 1
        await other.append("a", 1, [event(), event()])

        # expected 3, beyond what one knows: the server finds version 3 stored
        assert (await one.append("a", 3, [event()])).version == 4
        # expected 6 on a stream at 4: refused, never a gap
        with pytest.raises(ConcurrencyError) as caught:
            await other.append("a", 6, [event()])
        assert (caught.value.expected_version, caught.value.actual_version) == (6, 4)
        # the head one knows (4) is stale once other appends; the unique index refuses it
        await other.append("a", 4, [event()])
        with pytest.raises(ConcurrencyError) as stale:
            await one.append("a", 4, [event()])
        assert stale.value.actual_version == 5
        assert versions(await collect(one.read_stream("a"))) == [1, 2, 3, 4, 5]


async def test_a_schema_of_version_5_is_upgraded_to_check_every_head_against_the_last_version(
    postgres_dsn: str, schema: str, raw: Any
) -> None:
    steps = _migrations(schema, _lock_key("append", schema), _channel(schema))
    await raw.execute(f'CREATE SCHEMA "{schema}"')
    for step in range(1, 6):
        for statement in steps[step]:
            await raw.execute(statement)
    await raw.execute(f'INSERT INTO "{schema}".actorsource_schema (version) VALUES (5)')
    async with PostgresEventStore(postgres_dsn, schema=schema) as store:
        assert store.schema_version == SCHEMA_VERSION == 6
        await store.append("a", 0, [event() for _ in range(3)])
        await store.save_snapshot(SnapshotRecord("a", 2, {"n": 2}, 1))
        await store.archive_stream("a", 2, None)  # versions 1 and 2 leave; 3 stays
        # version 1 is free in the table, yet taken: expecting 0 (or 1) is a conflict
        for expected in (0, 1):
            with pytest.raises(ConcurrencyError) as caught:
                await store.append("a", expected, [event()])
            assert caught.value.actual_version == 3
        assert versions(await collect(store.read_stream("a", 3))) == [3]


async def test_one_notification_per_commit_not_per_append(
    postgres_dsn: str, schema: str, raw: Any
) -> None:
    heads: asyncio.Queue[int] = asyncio.Queue()
    await raw.add_listener(_channel(schema), lambda *args: heads.put_nowait(int(args[3])))
    async with PostgresEventStore(postgres_dsn, schema=schema) as store:
        await store.append("warm", 0, [event()])  # the schema exists; its commit notifies
        before = store.batches_committed
        futures = [store.submit_append(f"s-{n}", 0, [event(), event()]) for n in range(50)]
        await asyncio.gather(*futures)
        commits = store.batches_committed - before
        last = (await everything(store))[-1].position

        notified = []
        while not notified or notified[-1] != last:
            notified.append(await heads.get())

    assert commits < 50
    assert notified[0] == 1  # the warm-up's
    assert len(notified) - 1 == commits  # one per commit of the 50 appends
    assert notified[-1] == 101
