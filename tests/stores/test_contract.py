"""The event store contract: every store passes this one suite, through the ``store`` fixture."""

from __future__ import annotations

import copy
import itertools
import math
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorsource import (
    AppendResult,
    CodecError,
    ConcurrencyError,
    EventStore,
    NewEvent,
    SnapshotRecord,
    StoredEvent,
    StoreError,
)

from ..conftest import make_store

T = TypeVar("T")


def event(
    type: str = "Deposited",
    data: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent:
    return NewEvent(
        event_id if event_id is not None else str(uuid.uuid4()),
        type,
        {"amount": 1} if data is None else data,
        {} if metadata is None else metadata,
    )


def events(count: int) -> list[NewEvent]:
    return [event(data={"n": i}) for i in range(count)]


async def collect(items: AsyncIterable[T]) -> list[T]:
    return [item async for item in items]


async def everything(store: EventStore) -> list[StoredEvent]:
    return await collect(store.read_all())


def versions(stored: list[StoredEvent]) -> list[int]:
    return [e.version for e in stored]


def positions(stored: list[StoredEvent]) -> list[int]:
    return [e.position for e in stored]


# -- versions, positions, append results ------------------------------------------------------


async def test_append_to_new_stream_starts_at_version_1(store: EventStore) -> None:
    result = await store.append("Account-1", 0, [event()])

    assert result.version == 1
    assert versions(await collect(store.read_stream("Account-1"))) == [1]


async def test_versions_are_contiguous_across_appends(store: EventStore) -> None:
    await store.append("Account-1", 0, events(2))
    await store.append("Account-1", 2, events(3))
    await store.append("Account-1", None, events(1))

    assert versions(await collect(store.read_stream("Account-1"))) == [1, 2, 3, 4, 5, 6]


async def test_positions_are_global_gap_free_and_increasing_across_streams(
    store: EventStore,
) -> None:
    await store.append("a", 0, events(2))
    await store.append("b", 0, events(1))
    await store.append("a", 2, events(3))
    await store.append("c", None, events(2))

    stored = await everything(store)
    assert positions(stored) == list(range(1, 9))
    assert [e.stream_id for e in stored] == ["a", "a", "b", "a", "a", "a", "c", "c"]
    for stream_id in ("a", "b", "c"):
        in_stream = await collect(store.read_stream(stream_id))
        assert positions(in_stream) == sorted(positions(in_stream))


async def test_append_result_reports_last_version_first_position_and_utc_time(
    store: EventStore,
) -> None:
    await store.append("other", 0, events(4))

    result = await store.append("Account-1", 0, events(3))

    assert isinstance(result, AppendResult)
    assert result.version == 3
    assert result.first_position == 5
    assert result.recorded_at.tzinfo is not None
    assert result.recorded_at.utcoffset() == timedelta(0)
    stored = await collect(store.read_stream("Account-1"))
    assert positions(stored) == [5, 6, 7]
    assert {e.recorded_at for e in stored} == {result.recorded_at}


# -- expected versions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [(0, 1), (0, 5), (2, 0), (2, 1), (2, 3)],
    ids=["empty-expect-1", "empty-expect-5", "at-2-expect-0", "at-2-expect-1", "at-2-expect-3"],
)
async def test_expected_version_mismatch_raises_concurrency_error_with_versions(
    store: EventStore, head: int, expected: int
) -> None:
    if head:
        await store.append("Account-1", 0, events(head))

    with pytest.raises(ConcurrencyError) as caught:
        await store.append("Account-1", expected, [event()])

    assert caught.value.stream_id == "Account-1"
    assert caught.value.expected_version == expected
    assert caught.value.actual_version == head
    assert f"expected {expected}" in str(caught.value)


async def test_concurrency_error_stores_nothing(store: EventStore) -> None:
    await store.append("Account-1", 0, events(2))
    await store.append("other", 0, events(1))
    before_stream = await collect(store.read_stream("Account-1"))
    before_all = await everything(store)

    with pytest.raises(ConcurrencyError):
        await store.append("Account-1", 1, events(3))

    assert await collect(store.read_stream("Account-1")) == before_stream
    assert await everything(store) == before_all
    assert await store.stream_version("Account-1") == 2
    # the positions the failed append did not take are still free
    result = await store.append("Account-1", 2, events(1))
    assert (result.version, result.first_position) == (3, 4)


async def test_expected_version_none_appends_at_the_head(store: EventStore) -> None:
    first = await store.append("Account-1", None, events(2))
    second = await store.append("Account-1", None, events(1))

    assert (first.version, second.version) == (2, 3)
    assert versions(await collect(store.read_stream("Account-1"))) == [1, 2, 3]


# -- reads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_version", "to_version", "expected"),
    [
        (1, None, [1, 2, 3, 4, 5]),
        (3, None, [3, 4, 5]),
        (1, 2, [1, 2]),
        (2, 4, [2, 3, 4]),
        (4, 4, [4]),
        (5, 99, [5]),
        (6, None, []),
        (4, 3, []),
        (0, 2, [1, 2]),
        (-5, 1, [1]),
        (1, 0, []),
        (1, -1, []),
    ],
)
async def test_read_stream_from_version_and_to_version_select_a_range(
    store: EventStore, from_version: int, to_version: int | None, expected: list[int]
) -> None:
    await store.append("Account-1", 0, events(5))

    stored = await collect(store.read_stream("Account-1", from_version, to_version))

    assert versions(stored) == expected


async def test_read_stream_of_empty_stream_yields_nothing(store: EventStore) -> None:
    await store.append("other", 0, events(2))

    assert await collect(store.read_stream("Account-1")) == []


async def test_read_stream_yields_only_that_streams_events(store: EventStore) -> None:
    await store.append("a", 0, events(2))
    await store.append("ab", 0, events(1))
    await store.append("A", 0, events(1))
    await store.append("a", 2, events(1))

    stored = await collect(store.read_stream("a"))

    assert [e.stream_id for e in stored] == ["a", "a", "a"]
    assert versions(stored) == [1, 2, 3]


async def test_read_all_of_empty_store_yields_nothing(store: EventStore) -> None:
    assert await everything(store) == []


@pytest.mark.parametrize(
    ("from_position", "expected"),
    [(1, [1, 2, 3, 4]), (3, [3, 4]), (4, [4]), (5, []), (0, [1, 2, 3, 4]), (-3, [1, 2, 3, 4])],
)
async def test_read_all_from_position_starts_there(
    store: EventStore, from_position: int, expected: list[int]
) -> None:
    await store.append("a", 0, events(2))
    await store.append("b", 0, events(2))

    assert positions(await collect(store.read_all(from_position))) == expected


ROUND_TRIP_DATA: dict[str, Any] = {
    "nested": {"deeper": {"deepest": [1, {"x": [None, True, False]}]}},
    "unicode": "Grüße, 世界, 🚀, \u200b, \\ and \"quotes\" and 'single'",
    "list": [1, "two", 3.5, None, [], {}],
    "float": 0.1 + 0.2,
    "negative_zero": -0.0,
    "tiny": 5e-324,
    "huge": 1.7976931348623157e308,
    "big_int": 2**63 - 1,
    "small_int": -(2**63),
    "true": True,
    "false": False,
    "none": None,
    "empty_string": "",
    "nul": "a\x00b",
    "": "empty key",
}


async def test_data_metadata_type_and_event_id_round_trip_exactly(store: EventStore) -> None:
    metadata = {"correlation_id": "c-1", "user": {"id": 7, "roles": ["admin", "ü"]}}
    appended = event("Überweisung.Eingegangen/v2 🚀", ROUND_TRIP_DATA, metadata, "id-ü-1")
    await store.append("Account-1", 0, [appended])

    (stored,) = await collect(store.read_stream("Account-1"))
    (from_all,) = await everything(store)

    assert stored == from_all
    assert stored.type == appended.type
    assert stored.event_id == appended.event_id
    assert stored.data == ROUND_TRIP_DATA
    assert stored.metadata == metadata
    assert type(stored.data["float"]) is float
    assert type(stored.data["big_int"]) is int
    assert type(stored.data["true"]) is bool
    assert math.copysign(1.0, stored.data["negative_zero"]) == -1.0
    assert stored.data["list"][2] == 3.5


async def test_empty_data_and_metadata_round_trip(store: EventStore) -> None:
    await store.append("Account-1", 0, [event(data={}, metadata={})])

    (stored,) = await collect(store.read_stream("Account-1"))

    assert (stored.data, stored.metadata) == ({}, {})


# -- what is stored cannot be changed through a caller's objects --------------------------------


async def test_mutating_appended_dicts_does_not_change_stored_events(store: EventStore) -> None:
    data: dict[str, Any] = {"amount": 5, "items": [1, 2], "nested": {"k": "v"}}
    metadata: dict[str, Any] = {"user": {"id": 1}}
    original = (copy.deepcopy(data), copy.deepcopy(metadata))
    await store.append("Account-1", 0, [event(data=data, metadata=metadata)])

    data["amount"] = 999
    data["items"].append(3)
    data["nested"]["k"] = "changed"
    metadata["user"]["id"] = 2
    metadata["new"] = True

    (stored,) = await collect(store.read_stream("Account-1"))
    assert (stored.data, stored.metadata) == original


async def test_mutating_read_events_does_not_change_stored_events(store: EventStore) -> None:
    await store.append("Account-1", 0, [event(data={"items": [1]}, metadata={"m": {"k": 1}})])

    (first,) = await collect(store.read_stream("Account-1"))
    first.data["items"].append(2)
    first.data["extra"] = 1
    first.metadata["m"]["k"] = 2
    (from_all,) = await everything(store)
    from_all.data["items"].append(3)

    (again,) = await collect(store.read_stream("Account-1"))
    assert again.data == {"items": [1]}
    assert again.metadata == {"m": {"k": 1}}


async def test_mutating_saved_or_loaded_snapshot_state_does_not_change_it(
    store: EventStore,
) -> None:
    state: dict[str, Any] = {"balance": 10, "history": [1, 2]}
    await store.save_snapshot(SnapshotRecord("Account-1", 2, state))
    state["history"].append(3)

    loaded = await store.load_snapshot("Account-1")
    assert loaded is not None
    loaded.state["history"].append(4)
    loaded.state["balance"] = 0

    again = await store.load_snapshot("Account-1")
    assert again is not None
    assert again.state == {"balance": 10, "history": [1, 2]}


# -- duplicate event ids --------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["same stream", "other stream"])
async def test_duplicate_event_id_is_refused_and_nothing_of_that_append_is_stored(
    store: EventStore, target: str
) -> None:
    await store.append("Account-1", 0, [event(event_id="evt-dup-7")])
    before = await everything(store)
    stream_id = "Account-1" if target == "same stream" else "Account-2"
    expected = 1 if target == "same stream" else 0

    with pytest.raises(StoreError, match="evt-dup-7"):
        await store.append(
            stream_id, expected, [event(event_id="fresh"), event(event_id="evt-dup-7")]
        )

    assert await everything(store) == before
    assert await store.stream_version(stream_id) == expected
    # "fresh" was rolled back with the rest of the append, so it can be used now
    result = await store.append(stream_id, expected, [event(event_id="fresh")])
    assert result.first_position == 2


async def test_duplicate_event_id_within_one_append_is_refused(store: EventStore) -> None:
    with pytest.raises(StoreError, match="evt-twice"):
        await store.append(
            "Account-1", 0, [event(event_id="evt-twice"), event(event_id="evt-twice")]
        )

    assert await everything(store) == []


# -- idempotent appends (a retry of an append that was committed) ---------------------------------


@pytest.mark.parametrize("expected", [0, None], ids=["expected-0", "expected-none"])
async def test_appending_the_same_events_again_returns_the_original_result_and_stores_nothing(
    store: EventStore, expected: int | None
) -> None:
    await store.append("other", 0, events(2))
    batch = [event(event_id="e-1"), event(event_id="e-2")]
    original = await store.append("Account-1", expected, batch)
    await store.append("Account-1", 2, events(1))  # the stream moves on meanwhile
    before = await everything(store)

    again = await store.append("Account-1", expected, batch)

    assert again == original
    assert (again.version, again.first_position) == (2, 3)
    assert await everything(store) == before
    assert await store.stream_version("Account-1") == 3


async def test_retrying_the_last_append_of_a_stream_is_idempotent_too(store: EventStore) -> None:
    await store.append("Account-1", 0, events(1))
    original = await store.append("Account-1", 1, [event(event_id="last")])

    assert await store.append("Account-1", 1, [event(event_id="last")]) == original
    assert versions(await collect(store.read_stream("Account-1"))) == [1, 2]


@pytest.mark.parametrize(
    ("expected", "retried", "error"),
    [
        (0, ["a", "new"], ConcurrencyError),  # a partial overlap
        (0, ["b"], ConcurrencyError),  # a stored id, but not at the version it would take
        (1, ["a", "b"], ConcurrencyError),  # the stored ids, one version later
        (0, ["b", "a"], ConcurrencyError),  # the stored ids in another order
        (None, ["a", "new"], StoreError),
        (None, ["b", "c"], StoreError),  # b then c, but c was not appended with b
    ],
    ids=["partial", "other-version", "shifted", "reordered", "none-partial", "none-two-appends"],
)
async def test_an_append_that_is_not_a_committed_one_stays_an_error_and_stores_nothing(
    store: EventStore, expected: int | None, retried: list[str], error: type[Exception]
) -> None:
    await store.append("Account-1", 0, [event(event_id="a"), event(event_id="b")])
    await store.append("other", 0, events(1))  # so that c is not next to b in the log
    await store.append("Account-1", 2, [event(event_id="c")])
    before = await everything(store)

    with pytest.raises(error):
        await store.append("Account-1", expected, [event(event_id=i) for i in retried])

    assert await everything(store) == before


async def test_the_same_event_ids_appended_to_another_stream_stay_an_error(
    store: EventStore,
) -> None:
    batch = [event(event_id="x-1")]
    await store.append("Account-1", 0, batch)

    for expected in (0, None):
        with pytest.raises(StoreError, match="x-1"):
            await store.append("Account-2", expected, batch)

    assert await store.stream_version("Account-2") == 0


# -- finding a command's events -----------------------------------------------------------------


async def test_find_command_events_returns_that_streams_events_of_those_commands_in_order(
    store: EventStore,
) -> None:
    def of(command_id: str | None, n: int) -> NewEvent:
        metadata = {} if command_id is None else {"command_id": command_id, "user": "u"}
        return event(data={"n": n}, metadata=metadata)

    await store.append("Account-1", 0, [of("c-1", 1), of("c-1", 2)])
    await store.append("Account-1", 2, [of(None, 3)])
    await store.append("Account-2", 0, [of("c-1", 4), of("c-2", 5)])  # another stream
    await store.append("Account-1", 3, [of("c-2", 6)])
    await store.append("Account-1", 4, [event(metadata={"nested": {"command_id": "c-3"}})])

    found = await store.find_command_events("Account-1", ["c-2", "c-1", "c-3", "unknown"])

    assert [(e.stream_id, e.version, e.data["n"]) for e in found] == [
        ("Account-1", 1, 1),
        ("Account-1", 2, 2),
        ("Account-1", 4, 6),
    ]
    assert found[0] == (await collect(store.read_stream("Account-1")))[0]
    assert await store.find_command_events("Account-1", ["unknown"]) == []
    assert await store.find_command_events("Account-1", []) == []
    assert await store.find_command_events("never-written", ["c-1"]) == []


@pytest.mark.parametrize(
    "bad", ["c-1", [""], [None], [1]], ids=["bare-str", "empty", "none", "int"]
)
async def test_find_command_events_refuses_bad_command_ids(store: EventStore, bad: Any) -> None:
    with pytest.raises(ValueError, match="command"):
        await store.find_command_events("Account-1", bad)


# -- values JSON cannot hold ----------------------------------------------------------------------


UNSERIALIZABLE: dict[str, Any] = {
    "object": {"x": object()},
    "set": {"x": {1, 2}},
    "bytes": {"x": b"raw"},
    "int key": {1: "one"},
    "int too big": {"x": 2**64},
    "lone surrogate": {"x": "\ud800"},
    "nan": {"x": float("nan")},
    "infinity": {"x": [1.0, float("inf")]},
    "-infinity in a nested dict": {"x": {"y": float("-inf")}},
}


@pytest.mark.parametrize("where", ["data", "metadata"])
@pytest.mark.parametrize("value", UNSERIALIZABLE.values(), ids=UNSERIALIZABLE.keys())
async def test_unserializable_data_or_metadata_raises_codec_error_naming_the_event_type(
    store: EventStore, where: str, value: dict[Any, Any]
) -> None:
    await store.append("Account-1", 0, events(1))
    bad = event("MoneyDeposited", **{where: value})
    before = await everything(store)

    with pytest.raises(CodecError, match="MoneyDeposited") as caught:
        await store.append("Account-1", 1, [event(), bad])

    assert caught.value.type_name == "MoneyDeposited"
    assert f"the {where} of event" in str(caught.value)
    assert await everything(store) == before


@pytest.mark.parametrize("state", [{"x": object()}, {"x": float("nan")}], ids=["object", "nan"])
async def test_unserializable_snapshot_state_raises_codec_error(
    store: EventStore, state: dict[str, Any]
) -> None:
    with pytest.raises(CodecError, match="Account-1"):
        await store.save_snapshot(SnapshotRecord("Account-1", 1, state))

    assert await store.load_snapshot("Account-1") is None


# -- invalid arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream_id", ["", None, 42, b"bytes", "lone \ud800 surrogate"], ids=repr)
async def test_invalid_stream_id_is_rejected_by_every_operation(
    store: EventStore, stream_id: Any
) -> None:
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: store.append(stream_id, None, [event()]),
        lambda: collect(store.read_stream(stream_id)),
        lambda: store.stream_version(stream_id),
        lambda: store.load_snapshot(stream_id),
        lambda: store.save_snapshot(SnapshotRecord(stream_id, 1, {})),
    ]
    for operation in operations:
        with pytest.raises(ValueError, match="stream id"):
            await operation()

    assert await everything(store) == []


@pytest.mark.parametrize("expected_version", [-1, -100, True, 1.0, "1"], ids=repr)
async def test_invalid_expected_version_is_rejected(
    store: EventStore, expected_version: Any
) -> None:
    with pytest.raises(ValueError, match="expected_version"):
        await store.append("Account-1", expected_version, [event()])

    assert await everything(store) == []


async def test_empty_event_list_is_rejected(store: EventStore) -> None:
    with pytest.raises(ValueError, match="at least one event"):
        await store.append("Account-1", 0, [])

    assert await store.stream_version("Account-1") == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", ""),
        ("event_id", 7),
        ("event_id", "lone \udfff"),
        ("type", ""),
        ("type", None),
        ("type", "lone \ud800"),
    ],
)
async def test_invalid_event_id_or_type_is_rejected(
    store: EventStore, field: str, value: Any
) -> None:
    fields: dict[str, Any] = {"event_id": "id-1", "type": "Deposited", field: value}
    bad = NewEvent(fields["event_id"], fields["type"], {}, {})

    with pytest.raises(ValueError, match=field):
        await store.append("Account-1", 0, [event(), bad])

    assert await everything(store) == []


@pytest.mark.parametrize(
    ("version", "schema_version"), [(-1, 1), (True, 1), (2**63, 1), (1, "1"), (1, None)]
)
async def test_invalid_snapshot_version_is_rejected(
    store: EventStore, version: Any, schema_version: Any
) -> None:
    with pytest.raises(ValueError, match="version"):
        await store.save_snapshot(SnapshotRecord("Account-1", version, {}, schema_version))

    assert await store.load_snapshot("Account-1") is None


# -- stream versions and snapshots ----------------------------------------------------------------


async def test_stream_version_is_0_for_an_empty_stream_then_the_head(store: EventStore) -> None:
    assert await store.stream_version("Account-1") == 0

    await store.append("Account-1", 0, events(3))
    await store.append("other", 0, events(5))

    assert await store.stream_version("Account-1") == 3
    assert await store.stream_version("other") == 5


async def test_load_snapshot_returns_none_when_absent(store: EventStore) -> None:
    await store.save_snapshot(SnapshotRecord("other", 1, {"x": 1}))

    assert await store.load_snapshot("Account-1") is None
    assert await store.load_snapshot("Account-1", max_version=10) is None


async def test_load_snapshot_returns_the_latest(store: EventStore) -> None:
    for version in (5, 20, 10):
        await store.save_snapshot(SnapshotRecord("Account-1", version, {"at": version}))

    latest = await store.load_snapshot("Account-1")

    assert latest is not None
    assert (latest.stream_id, latest.version, latest.state) == ("Account-1", 20, {"at": 20})


@pytest.mark.parametrize(
    ("max_version", "expected"),
    [(20, 20), (19, 10), (10, 10), (9, 5), (5, 5), (4, None), (0, None)],
)
async def test_load_snapshot_max_version_returns_the_nearest_earlier_one(
    store: EventStore, max_version: int, expected: int | None
) -> None:
    for version in (5, 10, 20):
        await store.save_snapshot(SnapshotRecord("Account-1", version, {"at": version}))

    found = await store.load_snapshot("Account-1", max_version=max_version)

    assert (found.version if found is not None else None) == expected
    if found is not None:
        assert found.state == {"at": expected}


async def test_snapshot_state_schema_version_and_recorded_at_round_trip(
    store: EventStore,
) -> None:
    state = {"balance": 10.5, "owners": ["ü", "🚀"], "flags": {"frozen": False, "x": None}}
    await store.save_snapshot(SnapshotRecord("Account-1", 3, state, schema_version=7))

    loaded = await store.load_snapshot("Account-1")

    assert loaded is not None
    assert (loaded.stream_id, loaded.version, loaded.schema_version) == ("Account-1", 3, 7)
    assert loaded.state == state
    assert loaded.recorded_at is not None
    assert loaded.recorded_at.utcoffset() == timedelta(0)


async def test_saving_a_snapshot_again_at_a_version_replaces_it(store: EventStore) -> None:
    await store.save_snapshot(SnapshotRecord("Account-1", 3, {"v": "old"}, schema_version=1))
    await store.save_snapshot(SnapshotRecord("Account-1", 3, {"v": "new"}, schema_version=2))

    loaded = await store.load_snapshot("Account-1")

    assert loaded is not None
    assert (loaded.state, loaded.schema_version) == ({"v": "new"}, 2)


async def test_snapshots_belong_to_their_stream(store: EventStore) -> None:
    await store.save_snapshot(SnapshotRecord("a", 1, {"s": "a"}))
    await store.save_snapshot(SnapshotRecord("b", 2, {"s": "b"}))

    a = await store.load_snapshot("a")
    b = await store.load_snapshot("b")

    assert a is not None
    assert b is not None
    assert (a.version, a.state, b.version, b.state) == (1, {"s": "a"}, 2, {"s": "b"})


# -- hostile stream ids ---------------------------------------------------------------------------

HOSTILE_IDS = {
    "sql injection": "x'); DROP TABLE events;--",
    "quotes": "it's \"quoted\" `back` 'single'",
    "percent and underscore": "100%_like_%",
    "unicode": "Konto-Ärger-日本語-🚀👩‍👩‍👧",
    "whitespace": "  tab\tnew\nline  ",
    "10 KB": "k" * 10_240,
}


@pytest.mark.parametrize("stream_id", HOSTILE_IDS.values(), ids=HOSTILE_IDS.keys())
async def test_hostile_stream_ids_round_trip_exactly_and_leave_other_streams_alone(
    store: EventStore, stream_id: str
) -> None:
    await store.append("x", 0, events(1))
    await store.save_snapshot(SnapshotRecord("x", 1, {"mine": True}))

    result = await store.append(stream_id, 0, events(2))
    await store.save_snapshot(SnapshotRecord(stream_id, 2, {"hostile": True}))

    assert result.version == 2
    stored = await collect(store.read_stream(stream_id))
    assert [e.stream_id for e in stored] == [stream_id, stream_id]
    assert await store.stream_version(stream_id) == 2
    snapshot = await store.load_snapshot(stream_id)
    assert snapshot is not None
    assert (snapshot.stream_id, snapshot.state) == (stream_id, {"hostile": True})
    # the other stream is untouched, and the store still works
    assert versions(await collect(store.read_stream("x"))) == [1]
    other_snapshot = await store.load_snapshot("x")
    assert other_snapshot is not None
    assert other_snapshot.state == {"mine": True}
    assert [e.stream_id for e in await everything(store)] == ["x", stream_id, stream_id]
    assert (await store.append("x", 1, events(1))).version == 2


async def test_stream_id_with_nul_round_trips_exactly_or_is_refused_by_name(
    store: EventStore, store_kind: str
) -> None:
    # SQLite holds NUL in TEXT and compares whole values, so memory and SQLite both keep it;
    # a store that cannot hold NUL must raise a ValueError naming it, never truncate the id
    with_nul = "Account\x00-1"
    try:
        await store.append(with_nul, 0, events(1))
    except ValueError as exc:
        assert store_kind not in ("memory", "sqlite"), "memory and SQLite hold NUL"
        assert "NUL" in str(exc)
        assert await everything(store) == []
        return
    await store.append("Account", 0, events(2))
    await store.save_snapshot(SnapshotRecord(with_nul, 1, {"nul": True}))

    assert [e.stream_id for e in await collect(store.read_stream(with_nul))] == [with_nul]
    assert await store.stream_version(with_nul) == 1
    assert await store.stream_version("Account") == 2
    snapshot = await store.load_snapshot(with_nul)
    assert snapshot is not None
    assert snapshot.stream_id == with_nul
    assert await store.load_snapshot("Account") is None


# -- concurrency ----------------------------------------------------------------------------------


async def test_many_concurrent_appends_all_succeed_with_gap_free_positions(
    store: EventStore,
) -> None:
    appenders, streams = 200, 50
    results: dict[int, AppendResult] = {}

    async def append(n: int) -> None:
        stream_id = f"Account-{n % streams}"
        results[n] = await store.append(stream_id, None, [event(data={"n": n}), event()])

    async with anyio.create_task_group() as tg:
        for n in range(appenders):
            tg.start_soon(append, n)

    stored = await everything(store)
    assert positions(stored) == list(range(1, 2 * appenders + 1))
    assert len({e.event_id for e in stored}) == 2 * appenders
    for s in range(streams):
        in_stream = await collect(store.read_stream(f"Account-{s}"))
        assert versions(in_stream) == list(range(1, 2 * appenders // streams + 1))
        reported = sorted(r.version for n, r in results.items() if n % streams == s)
        assert reported == list(range(2, 2 * appenders // streams + 1, 2))
    # every append got the positions it reported, its two events side by side
    by_position = {e.position: e for e in stored}
    for n, result in results.items():
        assert by_position[result.first_position].data == {"n": n}
        assert by_position[result.first_position + 1].version == result.version


async def test_concurrent_appends_with_the_same_expected_version_exactly_one_wins(
    store: EventStore,
) -> None:
    await store.append("Account-1", 0, events(1))
    wins: list[int] = []
    conflicts: list[ConcurrencyError] = []

    async def append(n: int) -> None:
        try:
            await store.append("Account-1", 1, [event(data={"n": n})])
        except ConcurrencyError as exc:
            conflicts.append(exc)
        else:
            wins.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(append, n)

    assert len(wins) == 1
    assert len(conflicts) == 19
    assert {(c.expected_version, c.actual_version) for c in conflicts} == {(1, 2)}
    stored = await collect(store.read_stream("Account-1"))
    assert versions(stored) == [1, 2]
    assert stored[1].data == {"n": wins[0]}


async def test_close_finishes_an_append_already_under_way(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    await store.open()
    results: list[AppendResult] = []

    async def append() -> None:
        results.append(await store.append("Account-1", 0, events(2)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(append)
        tg.start_soon(store.close)

    assert [r.version for r in results] == [2]
    assert not store.is_open


# -- lifecycle ------------------------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[EventStore], Awaitable[object]]] = {
    "append": lambda s: s.append("Account-1", None, [event()]),
    "read_stream": lambda s: collect(s.read_stream("Account-1")),
    "read_all": lambda s: collect(s.read_all()),
    "stream_version": lambda s: s.stream_version("Account-1"),
    "load_snapshot": lambda s: s.load_snapshot("Account-1"),
    "save_snapshot": lambda s: s.save_snapshot(SnapshotRecord("Account-1", 1, {})),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_operations_on_an_unopened_store_raise_store_error(
    store_kind: str, tmp_path: Path, operation: Callable[[EventStore], Awaitable[object]]
) -> None:
    store = make_store(store_kind, tmp_path)

    with pytest.raises(StoreError, match="unopened; open it first"):
        await operation(store)

    assert not store.is_open


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
async def test_operations_on_a_closed_store_raise_store_error(
    store_kind: str, tmp_path: Path, operation: Callable[[EventStore], Awaitable[object]]
) -> None:
    store = make_store(store_kind, tmp_path)
    async with store:
        await store.append("Account-1", 0, events(1))

    with pytest.raises(StoreError, match="closed; a store cannot be reopened"):
        await operation(store)


async def test_a_closed_store_cannot_be_reopened(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    await store.open()
    await store.close()

    with pytest.raises(StoreError, match="cannot be reopened"):
        await store.open()
    with pytest.raises(StoreError, match="cannot be reopened"):
        async with store:
            pass

    assert not store.is_open


async def test_open_and_close_are_idempotent_and_is_open_follows_them(
    store_kind: str, tmp_path: Path
) -> None:
    store = make_store(store_kind, tmp_path)
    assert isinstance(store, EventStore)
    assert not store.is_open

    await store.open()
    await store.open()
    assert store.is_open
    assert (await store.append("Account-1", 0, events(1))).version == 1

    await store.close()
    await store.close()
    assert not store.is_open


async def test_closing_an_unopened_store_makes_it_closed(store_kind: str, tmp_path: Path) -> None:
    store = make_store(store_kind, tmp_path)
    await store.close()

    with pytest.raises(StoreError, match="cannot be reopened"):
        await store.open()


# -- property: the store's log is the model's log -------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
)
_json_keys = st.text(st.characters(exclude_categories=["Cs"]), max_size=4)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_keys, inner, max_size=3),
    max_leaves=8,
)
_json_dicts = st.dictionaries(_json_keys, _json_values, max_size=3)
_appends = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        # how the append states its expected version: the head, no check, or a wrong one
        st.sampled_from(["head", "any", "behind", "ahead"]),
        st.lists(st.tuples(_json_dicts, _json_dicts), min_size=1, max_size=3),
    ),
    max_size=12,
)
_example = itertools.count()


@settings(
    max_examples=30,
    deadline=None,
    # each example works in streams of its own and reads the log from where it started
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(appends=_appends)
async def test_read_all_is_exactly_the_model_log(
    store: EventStore, appends: list[tuple[str, str, list[tuple[dict[str, Any], dict[str, Any]]]]]
) -> None:
    prefix = f"example-{next(_example)}-"
    start = len(await everything(store)) + 1
    heads: dict[str, int] = {}
    log: list[tuple[str, int, int, str, dict[str, Any], dict[str, Any], str]] = []

    for name, how, payloads in appends:
        stream_id = prefix + name
        head = heads.get(stream_id, 0)
        expected = {"head": head, "any": None, "behind": head - 1, "ahead": head + 1}[how]
        new = [event(f"E{i}", data, meta) for i, (data, meta) in enumerate(payloads)]
        if expected is not None and expected < 0:
            with pytest.raises(ValueError, match="expected_version"):
                await store.append(stream_id, expected, new)
            continue
        if expected is not None and expected != head:
            with pytest.raises(ConcurrencyError) as caught:
                await store.append(stream_id, expected, new)
            assert caught.value.actual_version == head
            continue
        result = await store.append(stream_id, expected, new)
        first_position = start + len(log)
        assert (result.version, result.first_position) == (head + len(new), first_position)
        for i, e in enumerate(new):
            log.append(
                (
                    stream_id,
                    head + i + 1,
                    first_position + i,
                    e.type,
                    e.data,
                    e.metadata,
                    e.event_id,
                )
            )
        heads[stream_id] = head + len(new)

    stored = [
        (e.stream_id, e.version, e.position, e.type, e.data, e.metadata, e.event_id)
        for e in await collect(store.read_all(start))
    ]
    assert stored == log
    for stream_id, head in heads.items():
        assert await store.stream_version(stream_id) == head
