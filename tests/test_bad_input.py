"""The bad-input table: every bad input gets a clear error naming what was wrong, and nothing
stored changes (the global log, the streams and the snapshots, or the file's bytes)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import hashlib
import logging
import math
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
import pytest

from actorsource import (
    ActorFailedError,
    Aggregate,
    CodecError,
    EventApplyError,
    EventStore,
    IncompatibleStoreError,
    InMemoryEventStore,
    InvalidEventError,
    NewEvent,
    Projection,
    Runtime,
    SnapshotRecord,
    SQLiteEventStore,
    StoredEvent,
    StoreError,
    UnknownCommandError,
    apply,
    command,
    handle,
)
from actorsource.stores.sqlite import APPLICATION_ID, SCHEMA_VERSION

from .conftest import POSTGRES_DSN, SKIP_WITHOUT_POSTGRES, postgres_schema
from .domain import (
    Account,
    Attach,
    Attached,
    Deposit,
    Deposited,
    Misbehave,
    Opaque,
    Poke,
    Poked,
)

# -- a domain that can be made to misbehave -------------------------------------------------


@attrs.frozen
class Measure:
    value: float


@attrs.frozen
class Measured:
    value: float


@attrs.frozen
class Explode:
    pass


@attrs.frozen
class Exploded:
    pass


@attrs.define
class Gadget(Aggregate):
    pokes: int = 0

    @command
    def poke(self, cmd: Poke) -> Poked:
        return Poked()

    @command
    def attach(self, cmd: Attach) -> Attached:
        return Attached(Opaque())

    @command
    def measure(self, cmd: Measure) -> Measured:
        return Measured(cmd.value)

    @command
    def misbehave(self, cmd: Misbehave) -> Any:
        return cmd.returned

    @command
    def explode(self, cmd: Explode) -> Exploded:
        return Exploded()

    @apply
    def poked(self, event: Poked) -> None:
        self.pokes += 1

    @apply
    def attached(self, event: Attached) -> None:
        self.pokes += 100

    @apply
    def measured(self, event: Measured) -> None:
        self.pokes += 100

    @apply
    def exploded(self, event: Exploded) -> None:
        raise ValueError("boom: this applier refuses every event")


# -- what "nothing stored changed" compares -------------------------------------------------

STREAMS = ["Gadget-g", "Account-a", "Account-other"]


@attrs.frozen
class Contents:
    log: list[StoredEvent]
    snapshots: dict[str, SnapshotRecord | None]


async def contents(store: EventStore) -> Contents:
    """Everything the store holds that these tests could have changed."""
    log = [e async for e in store.read_all()]
    streams = {e.stream_id for e in log} | set(STREAMS)
    return Contents(log, {s: await store.load_snapshot(s) for s in sorted(streams)})


def raw(type_name: str, data: dict[str, Any]) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), type_name, data, {})


def fingerprint(directory: Path) -> dict[str, str]:
    """The bytes of every file in a directory: what refusing a database must leave unchanged."""
    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(directory))
        if (directory / name).is_file()
    }


# -- bad commands, events and metadata through ask ----------------------------------------------


@attrs.frozen
class BadCommand:
    command: object
    error: type[Exception]
    #: fragments the error's message must contain
    says: tuple[str, ...]
    metadata: Any = None
    #: attributes the error must carry
    fields: dict[str, Any] = attrs.field(factory=dict)
    #: refused as the message is sent (before it reaches the actor)
    at_send: bool = False


BAD_COMMANDS = {
    "event field holds an arbitrary object": BadCommand(
        Attach(),
        CodecError,
        ("Attached", "not JSON-serializable"),
        fields={"type_name": "Attached"},
    ),
    "event field holds NaN": BadCommand(
        Measure(math.nan), CodecError, ("Measured", "NaN"), fields={"type_name": "Measured"}
    ),
    "event field holds infinity": BadCommand(
        Measure(math.inf), CodecError, ("Measured", "infinity"), fields={"type_name": "Measured"}
    ),
    "command type the aggregate does not handle": BadCommand(
        Deposit(1),
        UnknownCommandError,
        ("Gadget", "'Deposit'"),
        fields={"aggregate": "Gadget", "command_type": "Deposit"},
    ),
    "a plain str as the command": BadCommand(
        "poke", UnknownCommandError, ("Gadget", "'str'"), fields={"command_type": "str"}
    ),
    "applier raises": BadCommand(
        Explode(),
        EventApplyError,
        ("Exploded", "'Gadget-g'", "ValueError", "boom", "not stored"),
        fields={"event_type": "Exploded", "stream_id": "Gadget-g"},
    ),
    "handler returns a str": BadCommand(
        Misbehave("Poked"),
        InvalidEventError,
        ("Misbehave", "'Poked'", "str is not an event type of Gadget"),
        fields={"aggregate": "Gadget", "command_type": "Misbehave"},
    ),
    "handler returns a dict": BadCommand(
        Misbehave({"pokes": 1}),
        InvalidEventError,
        ("{'pokes': 1}", "dict is not an event type of Gadget"),
    ),
    "handler returns an event class, not an event": BadCommand(
        Misbehave(Poked), InvalidEventError, ("type is not an event type of Gadget",)
    ),
    "handler returns a list holding a non-event": BadCommand(
        Misbehave([Poked(), 42]), InvalidEventError, ("int is not an event type of Gadget",)
    ),
    "metadata holds an object": BadCommand(
        Poke(),
        CodecError,
        ("metadata", "Poked", "not JSON-serializable"),
        metadata={"who": Opaque()},
        fields={"type_name": "Poked"},
    ),
    "metadata key is not a str": BadCommand(
        Poke(), CodecError, ("metadata", "Poked"), metadata={1: "one"}
    ),
    "metadata holds NaN": BadCommand(
        Poke(), CodecError, ("metadata", "Poked", "NaN"), metadata={"score": math.nan}
    ),
    "metadata is a list": BadCommand(
        Poke(), TypeError, ("metadata must be a dict, got list",), metadata=["u-1"], at_send=True
    ),
    "metadata is a str": BadCommand(
        Poke(), TypeError, ("metadata must be a dict, got str",), metadata="u-1", at_send=True
    ),
    "metadata uses the reserved key correlation_id": BadCommand(
        Poke(),
        ValueError,
        ("metadata key 'correlation_id' is reserved", "keyword argument", "correlation_id=..."),
        metadata={"user_id": "u-1", "correlation_id": "c-1"},
        at_send=True,
    ),
}


def check_error(error: BaseException, case: BadCommand) -> None:
    assert isinstance(error, case.error), f"{type(error).__name__}: {error}"
    for fragment in case.says:
        assert fragment in str(error), f"{fragment!r} not in {str(error)!r}"
    for name, value in case.fields.items():
        assert getattr(error, name) == value


@pytest.mark.parametrize("case", BAD_COMMANDS.values(), ids=BAD_COMMANDS.keys())
async def test_bad_command_gets_a_clear_error_and_nothing_stored_changes(
    store: EventStore, case: BadCommand
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Gadget, "g")
        await ref.ask(Poke())
        await runtime.ref(Account, "other").ask(Deposit(5))
        before = await contents(store)

        with pytest.raises(case.error) as caught:
            await ref.ask(case.command, metadata=case.metadata)

        check_error(caught.value, case)
        # the actor goes on, holding exactly what the store holds
        assert await ref.state() == Gadget(pokes=1)
        assert await contents(store) == before
        recorded = await ref.ask(Poke())
        assert [r.version for r in recorded] == [2]


@pytest.mark.parametrize("case", BAD_COMMANDS.values(), ids=BAD_COMMANDS.keys())
async def test_bad_told_command_is_logged_clearly_and_nothing_stored_changes(
    store: EventStore, case: BadCommand, caplog: pytest.LogCaptureFixture
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Gadget, "g")
        await ref.ask(Poke())
        before = await contents(store)

        with caplog.at_level(logging.WARNING, logger="actorsource"):
            if case.at_send:
                with pytest.raises(case.error) as caught:
                    await ref.tell(case.command, metadata=case.metadata)
                check_error(caught.value, case)
            else:
                await ref.tell(case.command, metadata=case.metadata)
            assert await ref.state() == Gadget(pokes=1)

        assert await contents(store) == before
    if not case.at_send:
        [told] = [r for r in caplog.records if r.getMessage() == "told command failed"]
        assert told.levelno == logging.WARNING
        assert told.__dict__["stream_id"] == "Gadget-g"
        assert told.__dict__["command_type"] == type(case.command).__name__
        assert told.__dict__["error"].startswith(case.error.__name__)
        for fragment in case.says:
            assert fragment in told.__dict__["error"]


async def test_append_the_store_refuses_as_bad_input_fails_only_its_command_without_backoff(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store refuses bad arguments with a ValueError as it is called, before any I/O: not a
    store failure, so the aggregate's next command is served at once."""
    name = "append_then" if hasattr(store, "append_then") else "submit_append"
    append = getattr(store, name)
    refusals = [ValueError("injected: this append's event type cannot be stored")]

    def refusing(*arguments: Any) -> Any:
        if refusals:
            raise refusals.pop()
        return append(*arguments)

    monkeypatch.setattr(store, name, refusing)
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(StoreError, match="injected: this append's event type"):
            await ref.ask(Deposit(1))
        await ref.ask(Deposit(2))
        assert await ref.state() == Account(2, [2])
    assert [(e.stream_id, e.data) for e in (await contents(store)).log] == [
        ("Account-a", {"amount": 2})
    ]


# -- stored events the reading code cannot read ---------------------------------------------------


@attrs.frozen
class BadStored:
    aggregate: type[Aggregate]
    good: NewEvent
    bad_type: str
    bad_data: dict[str, Any]
    #: fragments the error (or its cause) must contain, beside the stream and the version
    says: tuple[str, ...]


BAD_STORED = {
    "event type unknown to the code": BadStored(
        Account, raw("Deposited", {"amount": 1}), "Vanished", {"amount": 1}, ("'Vanished'",)
    ),
    "data does not fit the class": BadStored(
        Account,
        raw("Deposited", {"amount": 1}),
        "Deposited",
        {"amount": "lots"},
        ("'Deposited'", "amount"),
    ),
    "a field is missing": BadStored(
        Account, raw("Deposited", {"amount": 1}), "Deposited", {}, ("'Deposited'", "amount")
    ),
    "a field is null": BadStored(
        Account,
        raw("Deposited", {"amount": 1}),
        "Deposited",
        {"amount": None},
        ("'Deposited'", "amount"),
    ),
    # data written when the field was a float, read by code where it is an int
    "a float where the class holds an int": BadStored(
        Account,
        raw("Deposited", {"amount": 1}),
        "Deposited",
        {"amount": 2.5},
        ("'Deposited'", "amount"),
    ),
    "a string of digits where the class holds an int": BadStored(
        Account,
        raw("Deposited", {"amount": 1}),
        "Deposited",
        {"amount": "12"},
        ("'Deposited'", "amount"),
    ),
    "a bool where the class holds an int": BadStored(
        Account,
        raw("Deposited", {"amount": 1}),
        "Deposited",
        {"amount": True},
        ("'Deposited'", "amount"),
    ),
    "stored event whose applier raises": BadStored(
        Gadget, raw("Poked", {}), "Exploded", {}, ("Exploded", "ValueError", "boom")
    ),
}


def error_chain(error: BaseException) -> str:
    """The error's message and those of its causes: what a caller can read about it."""
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__
    return " <- ".join(texts)


@pytest.mark.parametrize("case", BAD_STORED.values(), ids=BAD_STORED.keys())
async def test_stored_event_the_code_cannot_read_fails_the_actor_naming_type_stream_and_version(
    store: EventStore, case: BadStored
) -> None:
    stream_id = f"{case.aggregate.__name__}-x"
    await store.append(stream_id, 0, [case.good])
    await store.append(stream_id, 1, [raw(case.bad_type, case.bad_data)])
    before = await contents(store)

    async with Runtime(store) as runtime:
        ref = runtime.ref(case.aggregate, "x")
        with pytest.raises(ActorFailedError) as caught:
            await ref.ask(Deposit(1) if case.aggregate is Account else Poke())
        assert caught.value.stream_id == stream_id
        text = error_chain(caught.value)
        for fragment in (*case.says, repr(stream_id), "version 2"):
            assert fragment in text, f"{fragment!r} not in {text!r}"
        # no half-loaded actor goes on: reading its state fails too
        with pytest.raises(ActorFailedError):
            await ref.state()
        # other aggregates never notice
        assert (await runtime.ref(Account, "other").ask(Deposit(3)))[0].version == 1

    after = await contents(store)
    assert [e for e in after.log if e.stream_id != "Account-other"] == before.log
    assert after.snapshots[stream_id] is None


async def test_messages_during_load_backoff_still_name_why_the_load_failed(
    store: EventStore,
) -> None:
    """A caller that arrives while a broken aggregate backs off gets the reason too."""
    await store.append("Account-x", 0, [raw("Deposited", {"amount": 1})])
    await store.append("Account-x", 1, [raw("Vanished", {"amount": 1})])
    before = await contents(store)

    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "x")
        errors = []
        for _ in range(2):  # the second comes at once: within the backoff after the first
            with pytest.raises(ActorFailedError) as caught:
                await ref.ask(Deposit(1))
            errors.append(error_chain(caught.value))

    for text in errors:
        for fragment in ("'Vanished'", "'Account-x'", "version 2"):
            assert fragment in text, f"{fragment!r} not in {text!r}"
    assert await contents(store) == before


# -- snapshots that no longer decode -------------------------------------------------------------

BAD_SNAPSHOTS = {
    "a field holds the wrong type": {"state": {"balance": "lots", "history": [1, 1, 1]}},
    "the state key is missing": {"balance": 3, "history": [1, 1, 1]},
    "the state is a list": {"state": [3, [1, 1, 1]]},
    "the state is a str": {"state": "balance=3"},
    "the state is null": {"state": None},
}


@pytest.mark.parametrize("state", BAD_SNAPSHOTS.values(), ids=BAD_SNAPSHOTS.keys())
async def test_snapshot_that_no_longer_decodes_is_skipped_with_a_warning_and_replayed_past(
    store: EventStore, state: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    for version in range(3):
        await store.append("Account-a", version, [raw("Deposited", {"amount": 1})])
    await store.save_snapshot(SnapshotRecord("Account-a", 3, state, 1))
    before = await contents(store)

    with caplog.at_level(logging.WARNING, logger="actorsource"):
        async with Runtime(store) as runtime:
            assert await runtime.ref(Account, "a").state() == Account(3, [1, 1, 1])
            stats = runtime.statistics()

    assert (stats.events_replayed, stats.actor_failures) == (3, 0)
    [warning] = [r for r in caplog.records if "snapshot cannot be decoded" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.__dict__["stream_id"] == "Account-a"
    assert warning.__dict__["version"] == 3
    assert "Account snapshot" in warning.__dict__["error"]
    assert await contents(store) == before


# -- rows damaged in the database ----------------------------------------------------------------

DURABLE = pytest.mark.parametrize(
    "store_kind", ["sqlite", pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)], indirect=True
)


def durable_store(kind: str, tmp_path: Path, **options: Any) -> EventStore:
    """A store of ``kind`` on the test's database (see ``make_store``), with ``options``."""
    if kind == "sqlite":
        return SQLiteEventStore(tmp_path / "events.db", **options)
    from actorsource import PostgresEventStore

    return PostgresEventStore(POSTGRES_DSN, schema=postgres_schema(tmp_path), **options)


async def damage(kind: str, tmp_path: Path, table: str, set_sql: str, where: str) -> None:
    """Change rows behind the store's back, as a faulty disk or a careless hand would."""
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(tmp_path / "events.db")) as conn, conn:
            assert conn.execute(f"UPDATE {table} SET {set_sql} WHERE {where}").rowcount == 1
        return
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        done = await conn.execute(
            f'UPDATE "{postgres_schema(tmp_path)}".{table} SET {set_sql} WHERE {where}'
        )
        assert done == "UPDATE 1"
    finally:
        await conn.close()


def json_column(kind: str, column: str, text: str) -> str:
    """SQL that sets a JSON column to ``text`` (in PostgreSQL, its exact-text column)."""
    quoted = "'" + text.replace("'", "''") + "'"
    if kind == "sqlite":
        return f"{column} = {quoted}"
    return f"{column} = NULL, {column}_text = {quoted}"


DAMAGED_JSON = {
    "truncated": '{"state": {"balance": 3, "history": [1, 1',
    "not JSON": "garbage \\ ' \"",
    "empty": "",
    "two values": '{"state": {"balance": 3}}, 1',
    # JSON only inside a larger text, where it would close the row early
    "brackets": "1],[2",
}


@DURABLE
@pytest.mark.parametrize("text", DAMAGED_JSON.values(), ids=DAMAGED_JSON.keys())
async def test_snapshot_whose_json_is_damaged_is_skipped_with_a_warning_and_replayed_past(
    store_kind: str, tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with durable_store(store_kind, tmp_path) as store:
        for version in range(3):
            await store.append("Account-a", version, [raw("Deposited", {"amount": 1})])
        await store.save_snapshot(SnapshotRecord("Account-a", 3, {"state": {"balance": 3}}, 1))
        column = "state" if store_kind == "sqlite" else "state_text"
        await damage(
            store_kind, tmp_path, "snapshots", json_column(store_kind, "state", text), "version = 3"
        )
        log = await collect(store.read_all())

        # bounded: a load that never answers must fail the test, not hang it
        with caplog.at_level(logging.WARNING, logger="actorsource"), anyio.fail_after(30):
            async with Runtime(store) as runtime:
                assert await runtime.ref(Account, "a").state() == Account(3, [1, 1, 1])
                at = await runtime.state_at(Account, "a", version=3)
                stats = runtime.statistics()
            assert await store.load_snapshot("Account-a") is None

        assert at == Account(3, [1, 1, 1])
        assert (stats.events_replayed, stats.actor_failures) == (3, 0)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings
        for warning in warnings:
            assert "snapshot of stream 'Account-a' at version 3 cannot be read" in (
                warning.getMessage()
            )
        assert await collect(store.read_all()) == log  # nothing stored changed
    if store_kind == "sqlite":
        with contextlib.closing(sqlite3.connect(tmp_path / "events.db")) as conn:
            assert conn.execute(f"SELECT {column} FROM snapshots").fetchall() == [(text,)]


@DURABLE
@pytest.mark.parametrize("page_size", [1, 100])
async def test_event_whose_data_is_damaged_is_a_codec_error_naming_stream_version_and_position(
    store_kind: str, tmp_path: Path, page_size: int
) -> None:
    async with durable_store(store_kind, tmp_path, read_page_size=page_size) as store:
        await store.append("Account-other", 0, [raw("Deposited", {"amount": 1})])
        for version in range(3):
            await store.append("Account-a", version, [raw("Deposited", {"amount": 1})])
        truncated = json_column(store_kind, "data", '{"amount": 1')
        await damage(store_kind, tmp_path, "events", truncated, "position = 3")

        for read in (store.read_all(), store.read_stream("Account-a")):
            with pytest.raises(CodecError) as caught:
                await collect(read)
            check_damaged(caught.value, "data")
        async with Runtime(store) as runtime:
            with pytest.raises(ActorFailedError) as failed:
                await runtime.ref(Account, "a").ask(Deposit(1))
            assert await runtime.ref(Account, "other").state() == Account(1, [1])
        assert isinstance(failed.value.__cause__, CodecError)
        check_damaged(failed.value.__cause__, "data")
        assert "stream 'Account-a' (position 3)" in str(failed.value)
        assert await store.stream_version("Account-a") == 3  # nothing appended


@DURABLE
async def test_event_whose_metadata_is_damaged_is_a_codec_error_naming_it(
    store_kind: str, tmp_path: Path
) -> None:
    async with durable_store(store_kind, tmp_path) as store:
        await store.append("Account-other", 0, [raw("Deposited", {"amount": 1})])
        for version in range(3):
            metadata = {"command_id": f"c-{version}"}
            deposited = NewEvent(f"e-{version}", "Deposited", {"amount": 1}, metadata)
            await store.append("Account-a", version, [deposited])
        broken = json_column(store_kind, "metadata", '{"command_id": "c-1')
        await damage(store_kind, tmp_path, "events", broken, "position = 3")

        for read in (store.read_all(), store.read_stream("Account-a")):
            with pytest.raises(CodecError) as caught:
                await collect(read)
            check_damaged(caught.value, "metadata")
        with pytest.raises(CodecError) as caught:
            await store.find_command_events("Account-a", ["c-1"])
        check_damaged(caught.value, "metadata")


def check_damaged(error: BaseException, column: str) -> None:
    assert isinstance(error, CodecError)
    assert (error.stream_id, error.version, error.position, error.type_name) == (
        "Account-a",
        2,
        3,
        "Deposited",
    )
    message = str(error)
    assert "event Deposited at version 2 of stream 'Account-a' (position 3)" in message
    assert f"its stored {column} is not valid JSON" in message


async def collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


# -- hostile stream ids through the runtime ------------------------------------------------------

HOSTILE_IDS = {
    "sql injection": "x'); DROP TABLE events; --",
    "quotes and backslashes": "it's \"quoted\" `back` \\ 'single'",
    "like wildcards": "100%_like_%",
    "nul": "a\x00b",
    "10 KB": "k" * 10_240,
    "unicode": "Konto-Ärger-日本語-🚀👩‍👩‍👧",
    "whitespace": " \t\n ",
}


@pytest.mark.parametrize("aggregate_id", HOSTILE_IDS.values(), ids=HOSTILE_IDS.keys())
async def test_hostile_aggregate_id_is_just_an_id_and_touches_no_other_stream(
    store: EventStore, store_kind: str, aggregate_id: str
) -> None:
    async with Runtime(store, snapshot_every=2) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(1))
        before = await contents(store)
        ref = runtime.ref(Account, aggregate_id)
        if "\x00" in aggregate_id and store_kind == "postgres":
            # PostgreSQL's text cannot hold NUL: the id is refused by name, nothing is stored
            with pytest.raises(ActorFailedError, match="cannot hold NUL"):
                await ref.ask(Deposit(2))
            assert await contents(store) == before
            return
        await ref.ask(Deposit(2))
        await ref.ask(Deposit(3))
        runtime.passivate_idle()
        assert await ref.state() == Account(5, [2, 3])

    stream_id = f"Account-{aggregate_id}"
    after = await contents(store)
    assert after.log[:1] == before.log
    assert [(e.stream_id, e.version, e.data) for e in after.log[1:]] == [
        (stream_id, 1, {"amount": 2}),
        (stream_id, 2, {"amount": 3}),
    ]
    assert [e.version async for e in store.read_stream(stream_id)] == [1, 2]
    snapshot = await store.load_snapshot(stream_id)
    assert snapshot is not None and snapshot.stream_id == stream_id
    assert after.snapshots["Account-a"] == before.snapshots["Account-a"]


async def test_aggregate_id_with_a_lone_surrogate_is_refused_by_name_and_stores_nothing(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "x\ud800y")
        with pytest.raises(ActorFailedError, match="no lone surrogates"):
            await ref.ask(Deposit(1))
        await runtime.ref(Account, "a").ask(Deposit(1))
    assert [e.stream_id async for e in store.read_all()] == ["Account-a"]


# -- database files that are not ours ---------------------------------------------------------


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is a text file, not a database\n" * 200)


def _foreign_tables(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()


def _other_application(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()


def _newer_schema(path: Path) -> None:
    # a real actorsource file (WAL mode, marked, one event), then a newer schema version
    async def make() -> None:
        async with SQLiteEventStore(path) as store:
            await store.append("Account-a", 0, [raw("Deposited", {"amount": 1})])

    asyncio.run(make())  # in a worker thread: see the test
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


BAD_FILES = {
    "not a SQLite file": (_not_sqlite, "not an actorsource database"),
    "another program's tables": (_foreign_tables, "holds tables users"),
    "another application's id": (_other_application, "another application's"),
    "a newer actorsource schema": (_newer_schema, f"schema version {SCHEMA_VERSION + 1}, newer"),
}


@pytest.mark.parametrize(("make", "says"), BAD_FILES.values(), ids=BAD_FILES.keys())
async def test_database_that_is_not_ours_is_refused_by_path_at_runtime_entry_and_unchanged(
    tmp_path: Path, make: Any, says: str
) -> None:
    path = tmp_path / "events.db"
    await anyio.to_thread.run_sync(make, path)
    before = fingerprint(tmp_path)
    store = SQLiteEventStore(path)

    with pytest.raises(IncompatibleStoreError) as caught:
        async with Runtime(store):
            raise AssertionError("the runtime must not open")

    assert says in str(caught.value)
    assert repr(str(path)) in str(caught.value)
    assert not store.is_open
    assert fingerprint(tmp_path) == before


def _in_missing_directory(tmp_path: Path) -> Path:
    return tmp_path / "missing" / "events.db"


def _a_directory(tmp_path: Path) -> Path:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    return directory


def sqlite_threads() -> set[threading.Thread]:
    """The live threads of SQLite stores' connections (one per connection)."""
    return {t for t in threading.enumerate() if t.name.startswith("actorsource-sqlite-")}


def tree(directory: Path) -> list[str]:
    """Every path under a directory, files and directories."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


BAD_PATHS = {
    "missing directory": (_in_missing_directory, "does not exist"),
    "a directory, not a file": (_a_directory, "cannot open"),
}


@pytest.mark.parametrize(("where", "says"), BAD_PATHS.values(), ids=BAD_PATHS.keys())
async def test_path_that_cannot_hold_a_database_is_a_store_error_naming_it(
    tmp_path: Path, where: Any, says: str
) -> None:
    path: Path = where(tmp_path)
    before = tree(tmp_path)
    store = SQLiteEventStore(path)
    threads_before = sqlite_threads()

    with pytest.raises(StoreError) as caught:
        async with Runtime(store):
            raise AssertionError("the runtime must not open")

    # a failed connect may leave a thread stopping on its own (see the next test): let it
    # finish before this test's loop closes, so that this test proves only what it names
    for thread in sqlite_threads() - threads_before:
        await anyio.to_thread.run_sync(thread.join, 5.0)
    assert says in str(caught.value)
    assert repr(str(path)) in str(caught.value)
    assert not isinstance(caught.value, IncompatibleStoreError)
    assert not store.is_open
    assert tree(tmp_path) == before  # nothing created: no file, no directory, no journal


async def test_a_failed_open_has_ended_every_thread_it_started_when_it_raises(
    tmp_path: Path,
) -> None:
    """When ``open()`` raises, nothing it started still runs: it cannot outlive the loop.

    A connection's thread whose connect failed must be stopped (with a reply to the loop)
    and waited for. If ``open()`` passes that on at once and the
    program then ends, the thread replies to a closed loop and dies with "Event loop is closed"
    (``asyncio.run`` of a failing open, in a loop: most runs print that traceback).
    """
    path = _a_directory(tmp_path)
    threads_before = sqlite_threads()

    with pytest.raises(StoreError, match="cannot open"):
        await SQLiteEventStore(path).open()
    # looked at before this task yields: only what open() itself waited for has happened
    running = [t for t in sqlite_threads() - threads_before if t.is_alive()]

    for thread in running:  # let it end while this test's loop still runs
        await anyio.to_thread.run_sync(thread.join, 5.0)
    assert [t.name for t in running] == []


# -- runtime settings -----------------------------------------------------------------------------

BAD_SETTINGS = {
    "snapshot_every 0": ({"snapshot_every": 0}, "snapshot_every must be an int >= 1 or None"),
    "snapshot_every negative": ({"snapshot_every": -5}, "snapshot_every must be"),
    "snapshot_every a str": ({"snapshot_every": "5"}, "snapshot_every must be"),
    "max_active 0": ({"max_active": 0}, "max_active must be"),
    "mailbox_size 0": ({"mailbox_size": 0}, "mailbox_size must be"),
    "max_batch 0": ({"max_batch": 0}, "max_batch must be"),
    "passivate_after negative": ({"passivate_after": -1.0}, "passivate_after must be >= 0"),
    "max_conflict_retries negative": ({"max_conflict_retries": -1}, "max_conflict_retries"),
    "max_activations 0": ({"max_activations": 0}, "max_activations must be"),
    "activation_timeout 0": ({"activation_timeout": 0}, "activation_timeout must be > 0"),
    "ask_timeout negative": ({"ask_timeout": -1.0}, "ask_timeout must be > 0"),
    "shutdown_timeout negative": ({"shutdown_timeout": -1.0}, "shutdown_timeout must be >= 0"),
    "idempotency_window negative": ({"idempotency_window": -1}, "idempotency_window must be"),
    "idempotency_window a float": ({"idempotency_window": 2.5}, "idempotency_window must be"),
    "ask_timeout NaN": ({"ask_timeout": math.nan}, "ask_timeout must be > 0 seconds"),
    "ask_timeout a str": ({"ask_timeout": "5"}, "ask_timeout must be > 0 seconds"),
    "shutdown_timeout NaN": ({"shutdown_timeout": math.nan}, "shutdown_timeout must be >= 0"),
    "activation_timeout NaN": ({"activation_timeout": math.nan}, "activation_timeout must be"),
    "activation_timeout a str": ({"activation_timeout": "1"}, "activation_timeout must be"),
    "max_conflict_retries a float": ({"max_conflict_retries": 2.5}, "max_conflict_retries"),
    "max_conflict_retries a str": ({"max_conflict_retries": "3"}, "max_conflict_retries"),
    "mailbox_size True": ({"mailbox_size": True}, "mailbox_size must be"),
    "max_batch True": ({"max_batch": True}, "max_batch must be"),
    "poll_interval 0": ({"poll_interval": 0}, "poll_interval must be > 0 seconds"),
    "poll_interval a str": ({"poll_interval": "0.5"}, "poll_interval must be > 0 seconds"),
    "poll_interval infinite": ({"poll_interval": math.inf}, "poll_interval must be > 0 seconds"),
}


@pytest.mark.parametrize(("settings", "says"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_runtime_setting_is_refused_naming_it_before_the_store_is_touched(
    tmp_path: Path, settings: dict[str, Any], says: str
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    with pytest.raises(ValueError, match=says):
        Runtime(store, **settings)
    assert not store.is_open
    assert os.listdir(tmp_path) == []


class Counting(Projection):
    def __init__(self) -> None:
        self.count = 0

    @handle
    def deposited(self, event: Deposited) -> None:
        self.count += 1


@pytest.mark.parametrize("interval", [0, -1.0, "0.5", math.nan, True])
async def test_a_projection_s_bad_poll_interval_is_refused_naming_it_and_nothing_runs(
    interval: object,
) -> None:
    async with Runtime(InMemoryEventStore()) as runtime:
        with pytest.raises(ValueError, match="poll_interval must be > 0 seconds"):
            runtime.add_projection(Counting(), poll_interval=interval)  # type: ignore[arg-type]
        assert runtime.statistics().projections == ()


@pytest.mark.parametrize("seconds", [-1, 0, math.nan, "1", True])
async def test_a_bad_ask_timeout_is_refused_naming_it_and_nothing_is_sent(seconds: object) -> None:
    async with Runtime(InMemoryEventStore()) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(ValueError, match="timeout must be > 0 seconds"):
            await ref.ask(Deposit(1), timeout=seconds)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ask_timeout must be > 0 seconds or None"):
            runtime.ask_timeout = seconds  # type: ignore[assignment]
        with pytest.raises(ValueError, match="shutdown_timeout must be >= 0 seconds or None"):
            runtime.shutdown_timeout = "1"  # type: ignore[assignment]
        assert not await ref.exists()


# -- after many refusals ---------------------------------------------------------------------------


async def test_every_refused_input_leaves_the_store_readable_by_a_fresh_runtime(
    store: EventStore,
) -> None:
    """After a run of bad inputs, a new runtime rebuilds exactly the good history."""
    async with Runtime(store) as runtime:
        ref = runtime.ref(Gadget, "g")
        for case in BAD_COMMANDS.values():
            await ref.ask(Poke())
            with pytest.raises(case.error):
                await ref.ask(case.command, metadata=case.metadata)
    async with Runtime(store) as runtime:
        assert await runtime.ref(Gadget, "g").state() == Gadget(pokes=len(BAD_COMMANDS))
    log = [e async for e in store.read_all()]
    assert [(e.type, e.version, e.position) for e in log] == [
        ("Poked", n, n) for n in range(1, len(BAD_COMMANDS) + 1)
    ]


# -- a typed event field holding a value of another type ----------------------------------------


@attrs.frozen
class _Put:
    value: Any


@attrs.frozen
class _Counted:  # a storage format: a plain int
    n: int


@attrs.frozen
class _Dated:
    on: datetime.date
    note: str | None = None


@attrs.define
class _Box(Aggregate):
    n: Any = 0

    @command
    def put(self, cmd: _Put) -> Any:
        if isinstance(cmd.value, tuple):
            return _Dated(*cmd.value)
        return _Counted(cmd.value)

    @apply
    def counted(self, event: _Counted) -> None:
        self.n = event.n

    @apply
    def dated(self, event: _Dated) -> None:
        self.n = event.on


class _Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("5", "field 'n' is typed int but holds str '5'"),
        (True, "field 'n' is typed int but holds bool True"),
        (2.5, "field 'n' is typed int but holds float 2.5"),
        ((datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC),), "typed date but holds datetime"),
        ((datetime.date(2026, 1, 2), 7), "field 'note' is typed str | None but holds int 7"),
    ],
)
async def test_a_typed_event_field_holding_another_type_is_refused_before_it_is_stored(
    store: EventStore, value: Any, problem: str
) -> None:
    async with Runtime(store) as runtime:
        box = runtime.ref(_Box, "b")
        with pytest.raises(CodecError, match=re.escape(problem)) as refused:
            await box.ask(_Put(value))
        assert "it was not stored" in str(refused.value)
        # bad input: no backoff, and the aggregate goes on (values that read back are taken)
        await box.ask(_Put(_Level.HIGH))
        await box.ask(_Put((datetime.date(2026, 1, 2), None)))
        await box.ask(_Put(4))
    assert [e.data for e in await collect(store.read_stream("_Box-b"))] == [
        {"n": 3},
        {"on": "2026-01-02", "note": None},
        {"n": 4},
    ]
    async with Runtime(store) as runtime:  # and it still loads
        assert (await runtime.ref(_Box, "b").state()).n == 4
