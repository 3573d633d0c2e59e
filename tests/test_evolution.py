"""Schema evolution (issue #6): stable type names, versions, upcasters, aliases, weak schema.

"Old code" and "new code" are different classes stored under the same names, as two deployments
of one program would be: the old runtime writes, a new runtime reads the same store.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from actorsource import (
    ActorFailedError,
    Aggregate,
    CodecError,
    Decider,
    DefinitionError,
    EventStore,
    Runtime,
    SQLiteEventStore,
    StoredEvent,
    apply,
    command,
    event_type,
)
from actorsource._aggregate import decider_of
from actorsource._codec import Codec

from .domain import Account as PlainAccount
from .domain import Deposit as PlainDeposit

# -- the old code: amounts in whole euros, a withdrawal event named MoneyWithdrawn -------------


@attrs.frozen
class Deposit:
    amount: int


@attrs.frozen
class Withdraw:
    amount: int


@event_type("Deposited")
@attrs.frozen
class DepositedV1:
    """Stored as "Deposited", version 1: ``{"amount": euros}``."""

    amount: int


@attrs.frozen
class MoneyWithdrawn:
    """Stored under its class name, version 1: ``{"amount": euros}``."""

    amount: int


@attrs.define
class AccountV1(Aggregate):
    stream_category = "Account"

    balance: int = 0
    deposits: int = 0

    @command
    def deposit(self, cmd: Deposit) -> DepositedV1:
        return DepositedV1(cmd.amount)

    @command
    def withdraw(self, cmd: Withdraw) -> MoneyWithdrawn:
        return MoneyWithdrawn(cmd.amount)

    @apply
    def deposited(self, event: DepositedV1) -> None:
        self.balance += event.amount
        self.deposits += 1

    @apply
    def withdrew(self, event: MoneyWithdrawn) -> None:
        self.balance -= event.amount


# -- the new code: cents and a currency; the withdrawal event renamed to Withdrawn -------------


def euros_to_cents(data: dict[str, Any]) -> dict[str, Any]:
    euros = data.pop("amount")  # the codec hands every upcaster a copy it may change
    return {**data, "cents": euros * 100}


def add_currency(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


@attrs.frozen
class DepositCents:
    cents: int
    currency: str = "EUR"


@attrs.frozen
class WithdrawCents:
    cents: int


@event_type("Deposited", version=3, upcasters={1: euros_to_cents, 2: add_currency})
@attrs.frozen
class DepositedV3:
    """Stored as "Deposited", version 3: ``{"cents", "currency", "memo", "$version": 3}``."""

    cents: int
    currency: str
    memo: str = ""  # added with a default: old data without it reads as ""


@event_type("Withdrawn", version=2, upcasters={1: euros_to_cents}, aliases=("MoneyWithdrawn",))
@attrs.frozen
class Withdrawn:
    """Stored as "Withdrawn", version 2; formerly MoneyWithdrawn (version 1)."""

    cents: int


def state_euros_to_cents(state: dict[str, Any]) -> dict[str, Any]:
    return {"cents": state["balance"] * 100, "deposits": state["deposits"]}


@attrs.define
class AccountV3(Aggregate):
    stream_category = "Account"
    snapshot_version = 2
    snapshot_upcasters: ClassVar = {1: state_euros_to_cents}

    cents: int = 0
    deposits: int = 0

    @command
    def deposit(self, cmd: DepositCents) -> DepositedV3:
        return DepositedV3(cmd.cents, cmd.currency)

    @command
    def withdraw(self, cmd: WithdrawCents) -> Withdrawn:
        return Withdrawn(cmd.cents)

    @apply
    def deposited(self, event: DepositedV3) -> None:
        assert event.currency == "EUR"
        self.cents += event.cents
        self.deposits += 1

    @apply
    def withdrew(self, event: Withdrawn) -> None:
        self.cents -= event.cents


@attrs.define
class AccountV3WithoutSnapshotUpcaster(AccountV3):
    snapshot_upcasters: ClassVar = {}


def failing_state_upcaster(state: dict[str, Any]) -> dict[str, Any]:
    raise KeyError("balance_in_euros")


@attrs.define
class AccountV3WithBrokenSnapshotUpcaster(AccountV3):
    snapshot_upcasters: ClassVar = {1: failing_state_upcaster}


async def stored(store: EventStore, stream_id: str = "Account-a") -> list[StoredEvent]:
    return [e async for e in store.read_stream(stream_id)]


async def write_with_old_code(store: EventStore, **settings: Any) -> None:
    """Deposit 5 and 7 euros, withdraw 2: the old runtime's events (and snapshots)."""
    async with Runtime(store, **settings) as runtime:
        ref = runtime.ref(AccountV1, "a")
        await ref.ask(Deposit(5))
        await ref.ask(Deposit(7))
        await ref.ask(Withdraw(2))
        assert await ref.state() == AccountV1(balance=10, deposits=2)


# -- upgrading a store written by old code ----------------------------------------------------


async def test_new_code_reads_v1_events_upcast_to_v3_and_leaves_them_stored_as_they_were(
    store: EventStore,
) -> None:
    await write_with_old_code(store)
    before = await stored(store)
    assert [(e.type, e.data) for e in before] == [
        ("Deposited", {"amount": 5}),  # version 1 writes no "$version"
        ("Deposited", {"amount": 7}),
        ("MoneyWithdrawn", {"amount": 2}),
    ]
    async with Runtime(store) as runtime:
        ref = runtime.ref(AccountV3, "a")
        assert await ref.state() == AccountV3(cents=1000, deposits=2)
        assert runtime.statistics().events_replayed == 3
        recorded = await ref.ask(DepositCents(50))
        assert recorded[0].event == DepositedV3(50, "EUR")
        await ref.ask(WithdrawCents(25))
    after = await stored(store)
    assert after[:3] == before  # reading never rewrites stored events
    assert [(e.type, e.data) for e in after[3:]] == [
        ("Deposited", {"cents": 50, "currency": "EUR", "memo": "", "$version": 3}),
        ("Withdrawn", {"cents": 25, "$version": 2}),
    ]
    async with Runtime(store) as runtime:  # a stream of old and new events
        assert await runtime.ref(AccountV3, "a").state() == AccountV3(cents=1025, deposits=3)


async def test_upgrade_survives_a_restart_on_the_same_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    await write_with_old_code(SQLiteEventStore(path))
    async with Runtime(SQLiteEventStore(path)) as runtime:
        ref = runtime.ref(AccountV3, "a")
        assert await ref.state() == AccountV3(cents=1000, deposits=2)
        await ref.ask(DepositCents(1))
    async with Runtime(SQLiteEventStore(path)) as runtime:
        assert await runtime.ref(AccountV3, "a").state() == AccountV3(cents=1001, deposits=3)
        assert runtime.statistics().events_replayed == 4


async def test_old_snapshot_is_upcast_by_the_snapshot_upcaster_and_only_the_tail_replayed(
    store: EventStore,
) -> None:
    await write_with_old_code(store, snapshot_every=2)
    snapshot = await store.load_snapshot("Account-a")
    assert snapshot is not None
    assert (snapshot.version, snapshot.schema_version) == (2, 1)
    assert snapshot.state == {"state": {"balance": 12, "deposits": 2}}
    async with Runtime(store) as runtime:
        assert await runtime.ref(AccountV3, "a").state() == AccountV3(cents=1000, deposits=2)
        assert runtime.statistics().events_replayed == 1  # the MoneyWithdrawn after it
    unchanged = await store.load_snapshot("Account-a")
    assert unchanged is not None and unchanged.state == snapshot.state


async def test_old_snapshot_without_a_snapshot_upcaster_is_ignored_for_a_full_replay(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    await write_with_old_code(store, snapshot_every=2)
    with caplog.at_level(logging.INFO, logger="actorsource"):
        async with Runtime(store) as runtime:
            state = await runtime.ref(AccountV3WithoutSnapshotUpcaster, "a").state()
            assert state == AccountV3WithoutSnapshotUpcaster(cents=1000, deposits=2)
            assert runtime.statistics().events_replayed == 3  # every event, not the tail
    ignored = [r for r in caplog.records if "ignoring snapshot" in r.getMessage()]
    assert len(ignored) == 1
    assert ignored[0].__dict__["reason"] == "no snapshot upcaster for version 1"


async def test_snapshot_upcaster_that_fails_falls_back_to_a_full_replay_with_a_warning(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    await write_with_old_code(store, snapshot_every=2)
    with caplog.at_level(logging.WARNING, logger="actorsource"):
        async with Runtime(store) as runtime:
            state = await runtime.ref(AccountV3WithBrokenSnapshotUpcaster, "a").state()
            assert (state.cents, state.deposits) == (1000, 2)
            assert runtime.statistics().events_replayed == 3
    warnings = [r for r in caplog.records if "snapshot cannot be decoded" in r.getMessage()]
    assert len(warnings) == 1
    assert "from version 1 to 2 raised KeyError" in warnings[0].__dict__["error"]


async def test_snapshot_newer_than_the_code_is_ignored_for_a_full_replay(
    store: EventStore,
) -> None:
    @attrs.define
    class NewerAccount(PlainAccount):
        stream_category = "Account"
        snapshot_version = 2

    async with Runtime(store, snapshot_every=2) as runtime:
        for _ in range(4):
            await runtime.ref(NewerAccount, "a").ask(PlainDeposit(1))
    snapshot = await store.load_snapshot("Account-a")
    assert snapshot is not None and snapshot.schema_version == 2
    async with Runtime(store) as runtime:
        assert (await runtime.ref(PlainAccount, "a").state()).balance == 4
        assert runtime.statistics().events_replayed == 4


async def test_event_newer_than_the_code_fails_clearly_and_nothing_stored_changes(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(AccountV3, "a").ask(DepositCents(100))
    before = await stored(store)
    async with Runtime(store) as runtime:  # the old code again, after a rollback
        ref = runtime.ref(AccountV1, "a")
        with pytest.raises(ActorFailedError) as caught:
            await ref.ask(Deposit(1))
        cause = caught.value.__cause__
        assert isinstance(cause, CodecError)
        assert cause.type_name == "Deposited"
        assert str(cause) == (
            "event 'Deposited' (stream 'Account-a', version 1) is stored with schema version 3, "
            "but DepositedV1 is at version 1: the data is newer than this code; read it with "
            "code that knows version 3 (events are upcast, never downcast)"
        )
        assert "schema version 3" in str(caught.value)
    assert await stored(store) == before


# -- the codec: versions, upcasters, aliases ---------------------------------------------------


def codec_for(*event_types: type) -> Codec:
    codec = Codec()
    codec.register_events(event_types)
    return codec


def test_version_1_stores_no_version_key_and_a_higher_version_stores_it() -> None:
    assert codec_for(DepositedV1).encode_event(DepositedV1(5)) == ("Deposited", {"amount": 5})
    codec = codec_for(DepositedV3)
    assert codec.encode_event(DepositedV3(5, "EUR", "x")) == (
        "Deposited",
        {"cents": 5, "currency": "EUR", "memo": "x", "$version": 3},
    )
    name, data = codec.encode_event(DepositedV3(5, "EUR", "x"))
    assert codec.decode_event(name, data) == DepositedV3(5, "EUR", "x")
    assert data["$version"] == 3  # decoding left the caller's data alone


def test_old_data_is_upcast_step_by_step_from_its_stored_version() -> None:
    codec = codec_for(DepositedV3)
    assert codec.decode_event("Deposited", {"amount": 5}) == DepositedV3(500, "EUR")
    # version 2 data starts the chain at the upcaster for version 2 (version 1's would fail)
    assert codec.decode_event("Deposited", {"cents": 7, "$version": 2}) == DepositedV3(7, "EUR")
    explicit = {"cents": 7, "currency": "USD", "$version": 3}
    assert codec.decode_event("Deposited", explicit) == DepositedV3(7, "USD")


def append_tag(data: dict[str, Any]) -> dict[str, Any]:
    data["tags"].append("new")  # changes a nested list in place
    return data


@event_type(version=2, upcasters={1: append_tag})
@attrs.frozen
class Tagged:
    tags: list[str]


def test_upcasters_change_a_copy_so_the_same_data_decodes_again_the_same() -> None:
    codec = codec_for(Tagged)
    data: dict[str, Any] = {"tags": ["old"]}
    assert codec.decode_event("Tagged", data) == Tagged(["old", "new"])
    assert data == {"tags": ["old"]}
    assert codec.decode_event("Tagged", data) == Tagged(["old", "new"])


def test_renamed_type_decodes_its_old_name_through_the_upcasters_and_writes_the_new_name() -> None:
    codec = codec_for(Withdrawn)
    assert codec.decode_event("MoneyWithdrawn", {"amount": 3}) == Withdrawn(300)
    assert codec.decode_event("Withdrawn", {"cents": 3, "$version": 2}) == Withdrawn(3)
    assert codec.encode_event(Withdrawn(3)) == ("Withdrawn", {"cents": 3, "$version": 2})


def test_data_newer_than_the_class_is_refused_naming_the_type_place_and_both_versions() -> None:
    codec = codec_for(DepositedV1)
    data = {"cents": 5, "currency": "EUR", "$version": 3}
    with pytest.raises(CodecError) as caught:
        codec.decode_event("Deposited", data, where=" (stream 'Account-a', version 4)")
    message = str(caught.value)
    assert "'Deposited' (stream 'Account-a', version 4)" in message
    assert "stored with schema version 3, but DepositedV1 is at version 1" in message
    assert caught.value.type_name == "Deposited"


@pytest.mark.parametrize("version", [0, -1, "3", 2.0, True, None, [3]])
def test_a_stored_version_that_is_not_an_int_of_at_least_1_is_refused(version: object) -> None:
    with pytest.raises(CodecError, match=r"schema version \('\$version'\) must be an int >= 1"):
        codec_for(DepositedV3).decode_event("Deposited", {"cents": 1, "$version": version})


def test_upcaster_that_raises_is_a_codec_error_naming_the_type_the_step_and_the_place() -> None:
    codec = codec_for(DepositedV3)
    with pytest.raises(CodecError) as caught:
        codec.decode_event("Deposited", {"euros": 5}, where=" (stream 's', version 2)")
    assert str(caught.value) == (
        "upcasting event 'Deposited' (stream 's', version 2) from version 1 to 2 raised "
        "KeyError: 'amount'"
    )
    assert isinstance(caught.value.__cause__, KeyError)


def as_list(data: dict[str, Any]) -> Any:
    return [data]  # a broken upcaster


@event_type(version=2, upcasters={1: as_list})
@attrs.frozen
class ListUpcast:
    value: int = 0


def test_upcaster_returning_a_non_dict_is_a_codec_error_naming_the_step() -> None:
    with pytest.raises(CodecError, match=r"'ListUpcast' from version 1 to 2 returned list"):
        codec_for(ListUpcast).decode_event("ListUpcast", {"value": 1})


def test_upcast_data_that_does_not_fit_the_class_says_it_was_upcast() -> None:
    codec = codec_for(DepositedV3)
    with pytest.raises(CodecError, match=r"upcast from schema version 1 to 3\): .*cents"):
        codec.decode_event("Deposited", {"amount": "five"})


def test_missing_fields_with_defaults_take_them_and_unknown_keys_are_ignored() -> None:
    codec = codec_for(DepositedV3)
    data = {"cents": 5, "currency": "EUR", "$version": 3, "retired_field": [1, 2]}
    assert codec.decode_event("Deposited", data) == DepositedV3(5, "EUR", memo="")


def test_the_weak_schema_stays_strict_about_value_types_and_required_fields() -> None:
    codec = codec_for(DepositedV3)
    with pytest.raises(CodecError, match="cents"):
        codec.decode_event("Deposited", {"cents": "5", "currency": "EUR", "$version": 3})
    with pytest.raises(CodecError, match="currency"):
        codec.decode_event("Deposited", {"cents": 5, "$version": 3})


def test_two_classes_claiming_one_alias_or_name_are_refused() -> None:
    @event_type("Closed", aliases=("AccountClosed",))
    @attrs.frozen
    class Closed:
        pass

    @attrs.frozen
    class AccountClosed:
        pass

    @event_type("Shut", aliases=("Closed",))
    @attrs.frozen
    class Shut:
        pass

    with pytest.raises(DefinitionError, match=r"'AccountClosed' is claimed by both .*as an alias"):
        codec_for(Closed, AccountClosed)
    with pytest.raises(DefinitionError, match=r"'Closed' is claimed by both .*\(as its name\)"):
        codec_for(Closed, Shut)
    codec_for(Closed, Closed)  # one class named twice is fine


def test_state_upcast_by_the_codec_copies_the_stored_state_first() -> None:
    codec = Codec()
    data = {"state": {"balance": 3, "deposits": 1}}
    upcasters = {1: state_euros_to_cents}
    state = codec.decode_state(data, AccountV3, from_version=1, to_version=2, upcasters=upcasters)
    assert state == AccountV3(cents=300, deposits=1)
    assert data == {"state": {"balance": 3, "deposits": 1}}
    with pytest.raises(CodecError, match="no upcaster from version 1 to 2"):
        codec.decode_state(data, AccountV3, from_version=1, to_version=2)
    with pytest.raises(CodecError, match="upcast, never downcast"):
        codec.decode_state(data, AccountV3, from_version=3, to_version=2)


# -- malformed declarations ---------------------------------------------------------------------


def noop(data: dict[str, Any]) -> dict[str, Any]:
    return data


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"version": 0}, ".Event: version must be an int >= 1, got 0"),
        ({"version": "2"}, "version must be an int >= 1, got '2'"),
        ({"version": True}, "version must be an int >= 1, got True"),
        (
            {"version": 3, "upcasters": {1: noop}},
            ".Event is at version 3 but upcasters has no upcaster for version 2: data stored",
        ),
        (
            {"version": 3},
            "no upcaster for versions 1, 2: data stored at every older version must stay "
            "readable, so the keys run from 1 to 2",
        ),
        (
            {"version": 2, "upcasters": {1: noop, 2: noop}},
            "upcasters has a key 2, but at version 2 the only key is 1",
        ),
        ({"version": 2, "upcasters": {0: noop, 1: noop}}, "upcasters has a key 0"),
        ({"version": 2, "upcasters": {"1": noop}}, "upcasters has a key '1'"),
        ({"upcasters": {1: noop}}, "has a key 1, but at version 1 there is nothing to upcast"),
        ({"version": 2, "upcasters": {1: "noop"}}, "entry for version 1 is not callable: 'noop'"),
        ({"version": 2, "upcasters": [noop]}, "upcasters must be a mapping"),
        ({"name": "Event", "aliases": ("Event",)}, "alias 'Event' is its own stored name"),
        ({"aliases": ("Old", "Old")}, "the alias 'Old' is given twice"),
        ({"aliases": "Old"}, "not the str 'Old'; write aliases=('Old',)"),
        ({"aliases": ("",)}, "every alias must be a non-empty str, got ''"),
        ({"aliases": 5}, "aliases must be a collection of names, got 5"),
        ({"name": ""}, ".Event: the stored name must be a non-empty str, got ''"),
        ({"name": 5}, "the stored name must be a non-empty str, got 5"),
    ],
)
def test_malformed_event_type_arguments_are_refused_naming_the_class(
    arguments: dict[str, Any], message: str
) -> None:
    class Event:
        pass

    with pytest.raises(DefinitionError, match=re.escape(message)):
        event_type(**arguments)(Event)


UNSTORABLE_NAMES = {"a lone surrogate": "Bad\udc80", "a NUL": "Bad\x00"}


@pytest.mark.parametrize("name", UNSTORABLE_NAMES.values(), ids=UNSTORABLE_NAMES.keys())
def test_event_type_name_no_store_can_hold_is_refused_when_declared(name: str) -> None:
    class Event:
        pass

    says = (
        "cannot be stored: a type name must be valid Unicode (no lone surrogates) without NUL "
        "characters"
    )
    with pytest.raises(DefinitionError, match=re.escape(f"Event: the stored name {name!r} {says}")):
        event_type(name)(Event)
    with pytest.raises(DefinitionError, match=re.escape(f"Event: an alias {name!r} {says}")):
        event_type(aliases=(name,))(Event)

    class Declared:  # the plain-str form, without the decorator: refused when registered
        __actorsource_event_type__ = name

    with pytest.raises(DefinitionError, match=re.escape(f"Declared: the stored name {name!r}")):
        Codec().register_events([Declared])


def test_event_type_without_parentheses_or_twice_or_on_a_non_class_is_refused() -> None:
    class Event:
        pass

    with pytest.raises(DefinitionError, match=r"write @event_type\(\) with parentheses"):
        event_type(Event)  # type: ignore[arg-type]
    event_type("E")(Event)
    with pytest.raises(DefinitionError, match="decorated with @event_type twice"):
        event_type("E")(Event)
    with pytest.raises(DefinitionError, match="decorates an event class"):
        event_type("E")(noop)  # type: ignore[arg-type]


def test_event_type_works_above_or_below_attrs() -> None:
    @attrs.frozen
    @event_type("Below", version=2, upcasters={1: noop})
    class Below:
        value: int

    codec = codec_for(Below)
    assert codec.encode_event(Below(1)) == ("Below", {"value": 1, "$version": 2})


def test_malformed_snapshot_settings_are_refused_naming_the_aggregate() -> None:
    @attrs.define
    class FarAhead(AccountV3):
        snapshot_upcasters: ClassVar = {2: state_euros_to_cents}

    @attrs.define
    class VersionZero(AccountV3):
        snapshot_version = 0

    with pytest.raises(DefinitionError, match=r"FarAhead: snapshot_upcasters has a key 2"):
        decider_of(FarAhead)
    with pytest.raises(DefinitionError, match="VersionZero: snapshot_version must be an int >= 1"):
        decider_of(VersionZero)
    with pytest.raises(DefinitionError, match="Decider 'counter': snapshot_upcasters has a key 1"):
        Decider(
            name="counter",
            initial_state=0,
            decide=lambda command, state: None,
            evolve=lambda state, event: state,
            event_types=[],
            snapshot_upcasters={1: noop},
        )


def test_snapshot_upcasters_may_leave_steps_out_and_reach_the_decider() -> None:
    @attrs.define
    class Partial(AccountV3):
        snapshot_version = 3
        snapshot_upcasters: ClassVar = {2: noop}  # version-1 snapshots: full replay

    assert dict(decider_of(Partial).snapshot_upcasters) == {2: noop}
    assert dict(decider_of(AccountV3).snapshot_upcasters) == {1: state_euros_to_cents}
    assert dict(decider_of(PlainAccount).snapshot_upcasters) == {}
