"""Metadata and tracing: command, correlation and causation ids, their context, and the logs."""

from __future__ import annotations

import logging
from typing import Any

import anyio.lowlevel
import attrs
import pytest

from actorsource import (
    Aggregate,
    EventStore,
    NewEvent,
    Projection,
    ProjectionContext,
    RecordedEvent,
    Runtime,
    StoredEvent,
    apply,
    caused_by,
    command,
    handle,
)
from actorsource._tracing import current_cause

from .domain import Account, Deposit, Deposited

IDS = ("correlation_id", "causation_id", "command_id")


async def stream(store: EventStore, stream_id: str) -> list[StoredEvent]:
    return [e async for e in store.read_stream(stream_id)]


@attrs.frozen
class Record:
    account: str
    amount: int


@attrs.frozen
class Recorded:
    account: str
    amount: int


@attrs.frozen
class Notify:
    text: str


@attrs.frozen
class Notified:
    text: str


@attrs.define
class Ledger(Aggregate):
    total: int = 0

    @command
    def record(self, cmd: Record) -> Recorded:
        return Recorded(cmd.account, cmd.amount)

    @apply
    def recorded(self, event: Recorded) -> None:
        self.total += event.amount


@attrs.define
class Notifier(Aggregate):
    sent: int = 0

    @command
    def notify(self, cmd: Notify) -> Notified:
        return Notified(cmd.text)

    @apply
    def notified(self, event: Notified) -> None:
        self.sent += 1


class Bookkeeper(Projection):
    """Deposited -> Record, from an async handler, through ProjectionContext.runtime."""

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        await ctx.runtime.ref(Ledger, "main").ask(Record(ctx.record.stream_id, event.amount))


class Watcher(Projection):
    """Recorded -> Notify, from a sync handler without a context, through its own runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @handle
    def recorded(self, event: Recorded) -> None:
        self.runtime.ref(Notifier, "n").tell_nowait(Notify(event.account))


# -- defaults and explicit ids --------------------------------------------------------------------


async def test_a_root_command_correlates_with_itself_and_is_its_own_cause(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        first = await ref.ask(Deposit(1))
        second = await ref.ask(Deposit(2))
    [one], [two] = first, second
    assert one.metadata["command_id"] != two.metadata["command_id"]
    for recorded in (one, two):
        command_id = recorded.metadata["command_id"]
        assert recorded.metadata == dict.fromkeys(IDS, command_id)
        assert len(command_id) == 36 and command_id != recorded.event_id  # a UUID of its own
    assert [e.metadata for e in await stream(store, "Account-a")] == [one.metadata, two.metadata]


async def test_ids_given_to_ask_tell_and_tell_nowait_are_stored_with_the_user_metadata(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        for n, send in enumerate(("ask", "tell", "tell_nowait")):
            ids = {"command_id": f"cmd-{n}", "correlation_id": f"corr-{n}", "causation_id": "x"}
            sent = getattr(ref, send)(Deposit(n + 1), metadata={"user_id": "u-7"}, **ids)
            if send != "tell_nowait":
                await sent
        await ref.state()
    stored = await stream(store, "Account-a")
    assert [e.metadata for e in stored] == [
        {
            "correlation_id": f"corr-{n}",
            "causation_id": "x",
            "command_id": f"cmd-{n}",
            "user_id": "u-7",
        }
        for n in range(3)
    ]


async def test_a_command_given_only_a_correlation_id_is_still_its_own_cause(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        [recorded] = await runtime.ref(Account, "a").ask(Deposit(1), correlation_id="req-42")
    command_id = recorded.metadata["command_id"]
    assert recorded.metadata == {
        "correlation_id": "req-42",
        "causation_id": command_id,
        "command_id": command_id,
    }


@pytest.mark.parametrize("key", IDS)
@pytest.mark.parametrize("send", ["ask", "tell", "tell_nowait"])
async def test_user_metadata_with_a_reserved_key_is_refused_naming_the_key(
    store: EventStore, key: str, send: str
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(ValueError, match=f"metadata key '{key}' is reserved") as caught:
            sent = getattr(ref, send)(Deposit(1), metadata={"user_id": "u", key: "mine"})
            if send != "tell_nowait":
                await sent
        assert f"pass it as the keyword argument instead ({key}=...)" in str(caught.value)
        await ref.state()
    assert await stream(store, "Account-a") == []


@pytest.mark.parametrize(
    ("name", "value", "error", "says"),
    [
        ("command_id", "", ValueError, "command_id must be a non-empty str"),
        ("command_id", 42, TypeError, "command_id must be a str, got int"),
        ("correlation_id", b"c-1", TypeError, "correlation_id must be a str, got bytes"),
        ("correlation_id", "", ValueError, "correlation_id must be a non-empty str"),
        ("causation_id", "\ud800", ValueError, "causation_id must be valid Unicode"),
    ],
)
async def test_ids_must_be_non_empty_strs(
    store: EventStore, name: str, value: Any, error: type[Exception], says: str
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(error, match=says):
            await ref.ask(Deposit(1), **{name: value})
        with pytest.raises(error, match=says):
            ref.tell_nowait(Deposit(1), **{name: value})
    assert await stream(store, "Account-a") == []


# -- propagation: command -> event -> projection -> command -------------------------------------


async def test_correlation_flows_from_a_command_through_projections_to_the_commands_they_send(
    store: EventStore,
) -> None:
    async with Runtime(store, poll_interval=0.05) as runtime:
        runtime.add_projection(Bookkeeper())
        runtime.add_projection(Watcher(runtime))
        roots = [await runtime.ref(Account, name).ask(Deposit(5)) for name in ("a", "b")]
        await runtime.wait_for_projection(Bookkeeper)
        await runtime.wait_for_projection(Watcher)
        await runtime.ref(Notifier, "n").state()  # after the told commands
    ledger = {e.data["account"]: e for e in await stream(store, "Ledger-main")}
    notes = {e.data["text"]: e for e in await stream(store, "Notifier-n")}
    assert sorted(ledger) == sorted(notes) == ["Account-a", "Account-b"]
    for name, [deposited] in zip(("a", "b"), roots, strict=True):
        root_command = deposited.metadata["command_id"]
        recorded, notified = ledger[f"Account-{name}"], notes[f"Account-{name}"]
        # one conversation, each step caused by the event before it
        assert recorded.metadata["correlation_id"] == root_command
        assert recorded.metadata["causation_id"] == deposited.event_id
        assert notified.metadata["correlation_id"] == root_command
        assert notified.metadata["causation_id"] == recorded.event_id
        # and each command has an id of its own
        command_ids = {
            root_command,
            recorded.metadata["command_id"],
            notified.metadata["command_id"],
        }
        assert len(command_ids) == 3


async def test_a_projection_handler_runs_as_caused_by_its_event_and_only_while_it_runs(
    store: EventStore,
) -> None:
    seen: list[tuple[str, str] | None] = []

    class Spy(Projection):
        @handle
        def deposited(self, event: Deposited) -> None:
            seen.append(current_cause.get())

        @handle
        async def recorded(self, event: Recorded) -> None:
            await anyio.lowlevel.checkpoint()  # the cause holds across an await
            seen.append(current_cause.get())

    async with Runtime(store) as runtime:
        [deposited] = await runtime.ref(Account, "a").ask(Deposit(1), correlation_id="corr-1")
        [recorded] = await runtime.ref(Ledger, "main").ask(Record("a", 1))
        raw = NewEvent("raw-1", "Deposited", {"amount": 2}, {})  # no tracing metadata at all
        await store.append("Account-b", 0, [raw])
        runtime.add_projection(Spy())
        await runtime.wait_for_projection(Spy)
        assert current_cause.get() is None
    assert seen == [
        ("corr-1", deposited.event_id),
        (recorded.metadata["command_id"], recorded.event_id),
        ("raw-1", "raw-1"),  # an event without a correlation starts its own
    ]


# -- caused_by: the same for the user's own handlers ----------------------------------------------


async def test_caused_by_makes_commands_join_the_events_conversation(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        [root] = await runtime.ref(Account, "a").ask(Deposit(1), correlation_id="order-7")
        [stored] = [e async for e in store.read_all()]
        ledger = runtime.ref(Ledger, "main")
        with caused_by(root):
            [inner] = await ledger.ask(Record("a", 1))
            with caused_by(inner):
                [nested] = await ledger.ask(Record("a", 2))
            [after_nested] = await ledger.ask(Record("a", 3))
            [explicit] = await ledger.ask(Record("a", 4), causation_id="mine")
        with caused_by(stored):  # a StoredEvent, as the store's reads yield it
            [from_stored] = await ledger.ask(Record("a", 5))
        [outside] = await ledger.ask(Record("a", 6))

    def ids(recorded: RecordedEvent[Any]) -> tuple[str, str]:
        return recorded.metadata["correlation_id"], recorded.metadata["causation_id"]

    assert ids(inner) == ("order-7", root.event_id)
    assert ids(nested) == ("order-7", inner.event_id)
    assert ids(after_nested) == ("order-7", root.event_id)
    assert ids(explicit) == ("order-7", "mine")
    assert ids(from_stored) == ("order-7", root.event_id)
    assert ids(outside) == (outside.metadata["command_id"],) * 2


async def test_caused_by_is_restored_when_its_block_raises_and_refuses_a_non_record() -> None:
    record = RecordedEvent(Deposited(1), "Account-a", 1, 1, "e-1", None, {})  # type: ignore[arg-type]
    with pytest.raises(KeyError), caused_by(record):
        assert current_cause.get() == ("e-1", "e-1")
        raise KeyError("boom")
    assert current_cause.get() is None
    not_a_record: Any = {"event_id": "e-1"}
    with pytest.raises(TypeError, match="caused_by\\(\\) takes the RecordedEvent"):
        caused_by(not_a_record).__enter__()


# -- structured logs ------------------------------------------------------------------------------


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


async def test_log_records_carry_the_documented_fields(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="actorsource"):
        async with Runtime(store) as runtime:
            first = await runtime.ref(Account, "a").ask(Deposit(1), correlation_id="corr-1")
            runtime.add_projection(Bookkeeper())
            await runtime.wait_for_projection(Bookkeeper)
        async with Runtime(store) as runtime:
            await runtime.ref(Account, "a").state()

    [deposited] = first
    appended = [r for r in records(caplog, "event appended") if r.stream_id == "Account-a"]  # type: ignore[attr-defined]
    [log] = appended
    assert (log.name, log.levelno) == ("actorsource.actor", logging.DEBUG)
    assert {key: getattr(log, key) for key in _APPENDED} == {
        "event_id": deposited.event_id,
        "event_type": "Deposited",
        "stream_id": "Account-a",
        "version": 1,
        "position": deposited.position,
        "correlation_id": "corr-1",
        "causation_id": deposited.metadata["command_id"],
        "command_id": deposited.metadata["command_id"],
        "recorded_at": deposited.recorded_at,
    }

    [replayed] = records(caplog, "events replayed")
    assert (replayed.name, replayed.levelno) == ("actorsource.actor", logging.DEBUG)
    assert {key: getattr(replayed, key) for key in _REPLAYED} == {
        "stream_id": "Account-a",
        "event_count": 1,
        "from_version": 1,
        "to_version": 1,
    }

    [updated] = records(caplog, "projection updated")
    assert (updated.name, updated.levelno) == ("actorsource.projection", logging.DEBUG)
    fields = {key: getattr(updated, key) for key in _UPDATED}
    assert fields.pop("processing_time_ms") >= 0
    assert fields == {
        "projection": "Bookkeeper",
        "event_id": deposited.event_id,
        "event_type": "Deposited",
        "stream_id": "Account-a",
        "version": 1,
        "position": deposited.position,
        "correlation_id": "corr-1",
    }


_APPENDED = (
    "event_id",
    "event_type",
    "stream_id",
    "version",
    "position",
    "correlation_id",
    "causation_id",
    "command_id",
    "recorded_at",
)
_REPLAYED = ("stream_id", "event_count", "from_version", "to_version")
_UPDATED = (
    "projection",
    "event_id",
    "event_type",
    "stream_id",
    "version",
    "position",
    "correlation_id",
    "processing_time_ms",
)


async def test_the_tracing_logs_are_quiet_by_default(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="actorsource"):
        async with Runtime(store) as runtime:
            runtime.add_projection(Bookkeeper())
            await runtime.ref(Account, "a").ask(Deposit(1))
            await runtime.wait_for_projection(Bookkeeper)
    quiet = {"event appended", "events replayed", "projection updated"}
    assert [r for r in caplog.records if r.getMessage() in quiet] == []
