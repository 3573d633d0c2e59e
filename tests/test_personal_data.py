"""Personal fields sealed per subject, and forgetting a subject (crypto-shredding)."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path
from typing import Annotated, ClassVar

import anyio
import attrs
import pydantic
import pytest

from actorsource import (
    FORGOTTEN,
    Aggregate,
    CodecError,
    DefinitionError,
    EventStore,
    InMemoryEventStore,
    JsonLinesArchiver,
    Personal,
    Projection,
    Runtime,
    SnapshotEvery,
    SQLiteEventStore,
    SubjectForgotten,
    UnknownSubjectError,
    apply,
    command,
    handle,
    personal,
)
from actorsource.cli import main

from .conftest import POSTGRES_DSN, postgres_schema

#: a value found nowhere in the database once its subject is forgotten
MARKER = "zebra-marker-4f1c@example.org"


@attrs.frozen
class Register:
    customer_id: str
    email: str
    name: str


@attrs.frozen
class Rename:
    customer_id: str
    name: str


@attrs.frozen
class Registered:
    """Stored: a customer registered (email and name are the customer's personal data)."""

    customer_id: str
    email: Annotated[str, Personal(subject="customer_id")]
    name: str = attrs.field(metadata=personal(subject="customer_id"))


@attrs.frozen
class Renamed:
    """Stored: a customer's new name (personal; may be None for "no name")."""

    customer_id: str
    name: Annotated[str | None, Personal(subject="customer_id")]


@attrs.define
class Customer(Aggregate):
    email: str = ""
    name: str | None = ""

    @command
    def register(self, cmd: Register) -> Registered:
        return Registered(cmd.customer_id, cmd.email, cmd.name)

    @command
    def rename(self, cmd: Rename) -> Renamed:
        return Renamed(cmd.customer_id, cmd.name)

    @apply
    def registered(self, event: Registered) -> None:
        self.email = event.email
        self.name = event.name

    @apply
    def renamed(self, event: Renamed) -> None:
        self.name = event.name


class Emails(Projection):
    name: ClassVar[str] = "emails"

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.by_customer: dict[str, str] = {}
        self.forgotten: list[str] = []

    @handle
    def registered(self, event: Registered) -> None:
        self.seen.append(event.email)
        self.by_customer[event.customer_id] = event.email

    @handle
    def subject_forgotten(self, event: SubjectForgotten) -> None:
        self.forgotten.append(event.subject)
        self.by_customer.pop(event.subject, None)


async def _events(runtime: Runtime, customer: str) -> list[object]:
    return [
        record.event
        async for record in runtime.subscribe(aggregates=[Customer], live=False)
        if record.stream_id == f"Customer-{customer}"
    ]


async def _register(runtime: Runtime, customer: str, email: str = MARKER) -> None:
    await runtime.ref(Customer, customer).ask(Register(customer, email, f"Name of {customer}"))


async def test_personal_fields_are_stored_sealed_and_read_back_clear(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await _register(runtime, "c1")
        state = await runtime.ref(Customer, "c1").state()
        assert state.email == MARKER
    stored = [event async for event in store.read_stream("Customer-c1")]
    assert MARKER not in repr(stored[0].data)
    assert stored[0].data["customer_id"] == "c1"
    assert set(stored[0].data["email"]) == {"$personal", "subject"}
    async with Runtime(store) as runtime:  # a fresh runtime reads the key from the store
        state = await runtime.ref(Customer, "c1").state()
        assert (state.email, state.name) == (MARKER, "Name of c1")


async def test_forget_leaves_the_events_decodable_with_the_placeholder(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await _register(runtime, "c1")
        await _register(runtime, "c2", "other@example.org")
        await runtime.forget("c1")
        events = await _events(runtime, "c1")
        assert events == [Registered("c1", FORGOTTEN, FORGOTTEN)]
        assert (await runtime.ref(Customer, "c1").state()).email == FORGOTTEN
        assert (await runtime.ref(Customer, "c2").state()).email == "other@example.org"
    async with Runtime(store) as runtime:
        assert (await runtime.ref(Customer, "c1").state()).email == FORGOTTEN


async def test_a_live_aggregate_forgets_at_once(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Customer, "c1")
        await _register(runtime, "c1")
        assert (await ref.state()).email == MARKER
        await runtime.forget("c1")
        assert (await ref.state()).email == FORGOTTEN


async def test_forget_deletes_the_snapshots_holding_the_subject(store: EventStore) -> None:
    async with Runtime(store, snapshot=SnapshotEvery(1)) as runtime:
        await _register(runtime, "c1")
        await runtime.ref(Customer, "c1").snapshot()
        assert await store.load_snapshot("Customer-c1") is not None
        await runtime.forget("c1")
        assert await store.load_snapshot("Customer-c1") is None


async def test_projections_see_the_placeholder_after_forget(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await _register(runtime, "c1")
        await runtime.forget("c1")
        await _register(runtime, "c2", "kept@example.org")
        emails = Emails()
        runtime.add_projection(emails)
        await runtime.wait_for_projection("emails")
        assert emails.seen == [FORGOTTEN, "kept@example.org"]


async def test_projections_get_subject_forgotten_once_to_clean_their_read_models(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        emails = Emails()
        runtime.add_projection(emails)
        await _register(runtime, "c1")
        await _register(runtime, "c2", "kept@example.org")
        await runtime.wait_for_projection("emails")
        assert emails.by_customer == {"c1": MARKER, "c2": "kept@example.org"}
        await runtime.forget("c1")
        await runtime.forget("c1")  # changes nothing: recorded once
        await runtime.wait_for_projection("emails")
        assert emails.forgotten == ["c1"]
        assert emails.by_customer == {"c2": "kept@example.org"}
    recorded = [e async for e in store.read_stream("$forgotten-c1")]
    assert [(e.type, e.data) for e in recorded] == [("$SubjectForgotten", {"subject": "c1"})]


async def test_a_forgotten_subject_that_comes_back_gets_a_new_key(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await _register(runtime, "c1")
        await runtime.forget("c1")
        await runtime.ref(Customer, "c1").ask(Rename("c1", "New name"))
        events = await _events(runtime, "c1")
        assert events == [Registered("c1", FORGOTTEN, FORGOTTEN), Renamed("c1", "New name")]


async def test_a_none_personal_value_is_stored_as_none(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Customer, "c1").ask(Rename("c1", None))  # type: ignore[arg-type]
    stored = [event async for event in store.read_stream("Customer-c1")]
    assert stored[0].data["name"] is None


async def test_forget_refuses_an_unknown_subject_and_changes_nothing(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await _register(runtime, "c1")
        with pytest.raises(UnknownSubjectError, match="'c9'") as caught:
            await runtime.forget("c9")
        assert caught.value.subject == "c9"
        for bad in ("", 5, "a\x00b", "a\ud800"):
            with pytest.raises(ValueError, match="subject id"):
                await runtime.forget(bad)  # type: ignore[arg-type]
        assert (await runtime.ref(Customer, "c1").state()).email == MARKER


async def test_an_event_without_a_subject_id_is_refused_and_nothing_is_stored(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        await _register(runtime, "c1")
        with pytest.raises(CodecError, match="'customer_id', which must be a non-empty str"):
            await runtime.ref(Customer, "c1").ask(Rename("", "x"))
        assert await store.stream_version("Customer-c1") == 1
        assert (await runtime.ref(Customer, "c1").state()).name == "Name of c1"


async def test_forgetting_twice_changes_nothing(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await _register(runtime, "c1")
        await runtime.forget("c1")
        await runtime.forget("c1")
        assert (await runtime.ref(Customer, "c1").state()).email == FORGOTTEN


async def test_the_archive_holds_only_sealed_data(store: EventStore, tmp_path: Path) -> None:
    async with Runtime(store, snapshot=SnapshotEvery(2)) as runtime:
        ref = runtime.ref(Customer, "c1")
        await _register(runtime, "c1")
        for index in range(3):
            await ref.ask(Rename("c1", f"{MARKER} {index}"))
        await ref.snapshot()
        archive = tmp_path / "archive"
        await runtime.archive("Customer-c1", archiver=JsonLinesArchiver(archive))
        await runtime.forget("c1")
    written = b"".join(path.read_bytes() for path in archive.rglob("*") if path.is_file())
    assert written
    clear = b"".join(
        gzip.decompress(path.read_bytes()) for path in archive.rglob("*.gz") if path.is_file()
    )
    assert b"$personal" in clear
    assert MARKER.encode() not in clear


@attrs.frozen
class PersonalAge:
    customer_id: str
    age: Annotated[int, Personal(subject="customer_id")]


@dataclasses.dataclass(frozen=True)
class NoSubject:
    email: str = dataclasses.field(metadata=personal(subject="missing"))


@attrs.define
class AgedPerson(Aggregate):
    @apply
    def aged(self, event: PersonalAge) -> None:
        pass


@attrs.define
class Anonymous(Aggregate):
    @apply
    def seen(self, event: NoSubject) -> None:
        pass


async def test_a_personal_field_must_be_a_str() -> None:
    with pytest.raises(DefinitionError, match="'age' must be typed str"):
        Runtime(InMemoryEventStore()).ref(AgedPerson, "p")


async def test_a_subject_field_must_be_a_str_field_that_is_not_personal() -> None:
    with pytest.raises(DefinitionError, match="subject field 'missing'"):
        Runtime(InMemoryEventStore()).ref(Anonymous, "p")
    with pytest.raises(DefinitionError, match="subject="):
        personal(subject="")


async def test_after_forget_the_database_holds_no_clear_text(
    store: EventStore, store_kind: str, tmp_path: Path
) -> None:
    if store_kind == "memory":
        pytest.skip("the memory store has no bytes to search")
    async with Runtime(store, snapshot=SnapshotEvery(1)) as runtime:
        await _register(runtime, "c1")
        await _register(runtime, "c2", "kept@example.org")
        await runtime.ref(Customer, "c1").ask(Rename("c1", f"{MARKER} again"))
        await runtime.ref(Customer, "c1").snapshot()
        before = await _raw(store_kind, tmp_path)
        assert MARKER.encode() in before  # the snapshots hold it in clear
        await runtime.forget("c1")
        assert MARKER.encode() not in await _raw(store_kind, tmp_path)
    async with Runtime(store) as runtime:
        assert (await runtime.ref(Customer, "c1").state()).email == FORGOTTEN
        assert (await runtime.ref(Customer, "c2").state()).email == "kept@example.org"
    after = await _raw(store_kind, tmp_path)
    assert MARKER.encode() not in after
    assert b"kept@example.org" in after  # the search would find it: c2's snapshot holds it


async def _raw(store_kind: str, tmp_path: Path) -> bytes:
    """Everything stored: the SQLite file, its WAL and shared-memory index; or every row of
    every table of the test's PostgreSQL schema, as text."""
    if store_kind == "sqlite":
        path = tmp_path / "events.db"
        return b"".join(
            part.read_bytes()
            for part in (path, path.with_name("events.db-wal"), path.with_name("events.db-shm"))
            if part.exists()
        )
    import asyncpg

    schema = postgres_schema(tmp_path)
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        rows = []
        for table in tables:
            rows += await conn.fetch(f'SELECT t::text FROM "{schema}"."{table[0]}" t')
        return "\n".join(row[0] for row in rows).encode()
    finally:
        await conn.close()


def test_the_forget_command_forgets_and_refuses_an_unknown_subject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.db"

    async def fill() -> None:
        async with Runtime(SQLiteEventStore(path)) as runtime:
            await _register(runtime, "c1")

    async def email() -> str:
        async with Runtime(SQLiteEventStore(path)) as runtime:
            return (await runtime.ref(Customer, "c1").state()).email

    anyio.run(fill)
    assert main(["forget", str(path), "c9"]) == 1
    assert "cannot forget subject 'c9'" in capsys.readouterr().err
    assert anyio.run(email) == MARKER
    assert main(["forget", str(path), "c1"]) == 0
    assert capsys.readouterr().out == "subject 'c1' forgotten\n"
    assert anyio.run(email) == FORGOTTEN


class PydanticSignedUp(pydantic.BaseModel):
    """Stored: a Pydantic event with a personal field."""

    model_config = pydantic.ConfigDict(frozen=True)
    customer_id: str
    email: Annotated[str, Personal(subject="customer_id")]


@dataclasses.dataclass(frozen=True)
class DataclassSignedUp:
    """Stored: a dataclass event with a personal field."""

    customer_id: str
    email: str = dataclasses.field(metadata=personal(subject="customer_id"))


@attrs.frozen
class SignUp:
    customer_id: str
    email: str
    via_pydantic: bool


@attrs.define
class Member(Aggregate):
    email: str = ""

    @command
    def sign_up(self, cmd: SignUp) -> PydanticSignedUp | DataclassSignedUp:
        if cmd.via_pydantic:
            return PydanticSignedUp(customer_id=cmd.customer_id, email=cmd.email)
        return DataclassSignedUp(cmd.customer_id, cmd.email)

    @apply
    def signed_up(self, event: PydanticSignedUp | DataclassSignedUp) -> None:
        self.email = event.email


@pytest.mark.parametrize("via_pydantic", [True, False], ids=["pydantic", "dataclass"])
async def test_pydantic_and_dataclass_events_seal_and_forget_their_personal_fields(
    via_pydantic: bool,
) -> None:
    store = InMemoryEventStore()
    async with Runtime(store) as runtime:
        await runtime.ref(Member, "m1").ask(SignUp("m1", MARKER, via_pydantic))
        stored = [event async for event in store.read_stream("Member-m1")]
        assert MARKER not in repr(stored[0].data)
        assert set(stored[0].data["email"]) == {"$personal", "subject"}
        assert (await runtime.ref(Member, "m1").state()).email == MARKER
        await runtime.forget("m1")
        assert (await runtime.ref(Member, "m1").state()).email == FORGOTTEN
