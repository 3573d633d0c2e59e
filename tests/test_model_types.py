"""Pydantic v2 models and stdlib dataclasses as commands, events and aggregate states.

Each kind is stored and read back on every store (events, snapshots, time travel), evolves
through upcasters as attrs classes do, and a type the codec cannot hold is refused when the
aggregate is first used, naming the class and the field.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import attrs
import pydantic
import pytest

from actorsource import (
    Aggregate,
    Decider,
    DefinitionError,
    EventStore,
    NewEvent,
    Runtime,
    apply,
    command,
    event_type,
)
from actorsource.testing import given

# -- Pydantic: commands, events (one evolved to version 2) and the aggregate itself ------------


class Deposit(pydantic.BaseModel):
    amount: int
    note: str = ""


@event_type("Deposited", version=2, upcasters={1: lambda data: {**data, "currency": "EUR"}})
class Deposited(pydantic.BaseModel):
    """Stored as "Deposited"; version 1 had no currency (it was always euros)."""

    amount: int
    currency: str
    at: datetime | None = None
    tags: tuple[str, ...] = ()


class Entry(pydantic.BaseModel):
    amount: int
    id: uuid.UUID  # a type Pydantic writes and reads itself


class Wallet(pydantic.BaseModel, Aggregate):
    stream_category: ClassVar[str] = "Wallet"

    balance: int = 0
    entries: list[Entry] = []

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        return Deposited(
            amount=cmd.amount,
            currency="USD",
            at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            tags=(cmd.note,) if cmd.note else (),
        )

    @apply
    def deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        self.entries.append(Entry(amount=event.amount, id=uuid.UUID(int=event.amount)))


# -- dataclasses: commands, events and the aggregate itself -----------------------------------


@dataclasses.dataclass(frozen=True)
class AddItem:
    sku: str
    quantity: int


@dataclasses.dataclass(frozen=True)
class ItemAdded:
    sku: str
    quantity: int


@dataclasses.dataclass
class Line:
    sku: str
    quantity: int


@dataclasses.dataclass
class Cart(Aggregate):
    lines: list[Line] = dataclasses.field(default_factory=list)
    total: int = 0

    @command
    def add(self, cmd: AddItem) -> ItemAdded:
        return ItemAdded(cmd.sku, cmd.quantity)

    @apply
    def added(self, event: ItemAdded) -> None:
        self.lines.append(Line(event.sku, event.quantity))
        self.total += event.quantity


# -- a Decider whose state is a Pydantic model -------------------------------------------------


class Tally(pydantic.BaseModel):
    count: int = 0
    skus: list[str] = []


def _decide_tally(command: AddItem, state: Tally) -> ItemAdded:
    return ItemAdded(command.sku, command.quantity)


def _evolve_tally(state: Tally, event: ItemAdded) -> Tally:
    return Tally(count=state.count + event.quantity, skus=[*state.skus, event.sku])


TALLY = Decider(
    name="Tally",
    decide=_decide_tally,
    evolve=_evolve_tally,
    event_types=[ItemAdded],
    initial_state=Tally(),
    snapshot_every=1,
)


@pytest.mark.parametrize("snapshot_every", [None, 1])
async def test_pydantic_commands_events_and_state_are_stored_and_read_back(
    store: EventStore, snapshot_every: int | None
) -> None:
    async with Runtime(store, snapshot_every=snapshot_every) as runtime:
        ref = runtime.ref(Wallet, "w")
        recorded = await ref.ask(Deposit(amount=5, note="gift"))
        await ref.ask(Deposit(amount=7))
        live = await ref.state()
    # closing waited for the snapshot saves; a new runtime loads the aggregate again
    async with Runtime(store) as runtime:
        reloaded = await runtime.ref(Wallet, "w").state()
        replayed = runtime.statistics().events_replayed
        at_one = await runtime.state_at(Wallet, "w", version=1)
    snapshot = await store.load_snapshot("Wallet-w")
    assert reloaded == live
    assert replayed == (0 if snapshot_every else 2)
    assert isinstance(reloaded, Wallet)
    assert reloaded.entries == [
        Entry(amount=5, id=uuid.UUID(int=5)),
        Entry(amount=7, id=uuid.UUID(int=7)),
    ]
    assert at_one == Wallet(balance=5, entries=[Entry(amount=5, id=uuid.UUID(int=5))])
    assert recorded[0].event == Deposited(
        amount=5, currency="USD", at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), tags=("gift",)
    )
    # Pydantic's JSON mode wrote them: a datetime as ISO text, a UUID as its string
    stored = [e async for e in store.read_stream("Wallet-w")]
    assert stored[0].data == {
        "amount": 5,
        "currency": "USD",
        "at": "2024-01-02T03:04:05Z",
        "tags": ["gift"],
        "$version": 2,
    }
    if snapshot_every:
        assert snapshot is not None and snapshot.version == 2
        assert snapshot.state["state"]["entries"][1] == {"amount": 7, "id": str(uuid.UUID(int=7))}
    else:
        assert snapshot is None


@pytest.mark.parametrize("snapshot_every", [None, 1])
async def test_dataclass_commands_events_and_state_are_stored_and_read_back(
    store: EventStore, snapshot_every: int | None
) -> None:
    async with Runtime(store, snapshot_every=snapshot_every) as runtime:
        ref = runtime.ref(Cart, "c")
        await ref.ask(AddItem("apple", 2))
        await ref.ask(AddItem("pear", 3))
        live = await ref.state()
    async with Runtime(store) as runtime:
        reloaded = await runtime.ref(Cart, "c").state()
        replayed = runtime.statistics().events_replayed
        at_one = await runtime.state_at(Cart, "c", version=1)
    snapshot = await store.load_snapshot("Cart-c")
    assert reloaded == live == Cart([Line("apple", 2), Line("pear", 3)], 5)
    assert replayed == (0 if snapshot_every else 2)
    assert at_one == Cart([Line("apple", 2)], 2)
    assert [e.data async for e in store.read_stream("Cart-c")] == [
        {"sku": "apple", "quantity": 2},
        {"sku": "pear", "quantity": 3},
    ]
    assert (snapshot is not None) == bool(snapshot_every)


async def test_a_pydantic_state_of_a_decider_is_snapshotted_and_reloaded(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(TALLY, "t")
        await ref.ask(AddItem("apple", 2))
        await ref.ask(AddItem("pear", 3))
    async with Runtime(store) as runtime:
        reloaded = await runtime.ref(TALLY, "t").state()
        assert runtime.statistics().events_replayed == 0
    snapshot = await store.load_snapshot("Tally-t")
    assert reloaded == Tally(count=5, skus=["apple", "pear"])
    assert snapshot is not None
    assert snapshot.state == {"state": {"count": 5, "skus": ["apple", "pear"]}}


async def test_a_pydantic_event_stored_at_an_older_version_is_upcast(store: EventStore) -> None:
    old = NewEvent(str(uuid.uuid4()), "Deposited", {"amount": 3}, {})
    await store.append("Wallet-old", 0, [old])
    async with Runtime(store) as runtime:
        ref = runtime.ref(Wallet, "old")
        await ref.ask(Deposit(amount=4))
        state = await ref.state()
        history = [e.event async for e in runtime.subscribe(aggregates=[Wallet], live=False)]
    assert state.balance == 7
    assert history[0] == Deposited(amount=3, currency="EUR")


class WalletV2(pydantic.BaseModel, Aggregate):
    """The state of Wallet at snapshot version 2: the balance renamed to cents."""

    stream_category: ClassVar[str] = "Wallet"
    snapshot_version: ClassVar[int] = 2
    snapshot_upcasters: ClassVar[dict[int, Any]] = {
        1: lambda state: {"cents": state["balance"] * 100, "entries": state["entries"]}
    }

    cents: int = 0
    entries: list[Entry] = []

    @apply
    def deposited(self, event: Deposited) -> None:
        raise AssertionError("the snapshot covers every event: nothing is replayed")


async def test_a_pydantic_state_snapshot_of_an_older_version_is_upcast(
    store: EventStore,
) -> None:
    async with Runtime(store, snapshot_every=1) as runtime:
        await runtime.ref(Wallet, "w").ask(Deposit(amount=5))
    async with Runtime(store) as runtime:
        state = await runtime.ref(WalletV2, "w").state()
    assert state == WalletV2(cents=500, entries=[Entry(amount=5, id=uuid.UUID(int=5))])


def test_the_test_kit_takes_pydantic_and_dataclass_aggregates() -> None:
    given(Wallet, Deposited(amount=2, currency="EUR")).when(Deposit(amount=3)).then(
        Deposited(amount=3, currency="USD", at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    ).then_state(lambda wallet: wallet.balance == 5)
    given(Cart).when(AddItem("fig", 1)).then(ItemAdded("fig", 1)).then_state(
        Cart([Line("fig", 1)], 1)
    )
    with pytest.raises(AssertionError, match=r"total: expected 2, got 1"):
        given(Cart, ItemAdded("fig", 1)).then_state(Cart([Line("fig", 1)], 2))


# -- types the codec cannot hold: refused when the aggregate is first used ----------------------


class Money:
    """Neither cattrs nor Pydantic knows how to write this as JSON."""

    def __init__(self, cents: int) -> None:
        self.cents = cents


class Charged(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    amount: Money


class Charge(pydantic.BaseModel):
    amount: int


class Till(pydantic.BaseModel, Aggregate):
    total: int = 0

    @command
    def charge(self, cmd: Charge) -> Charged:
        return Charged(amount=Money(cmd.amount))

    @apply
    def charged(self, event: Charged) -> None:
        self.total += event.amount.cents


@dataclasses.dataclass(frozen=True)
class Priced:
    sku: str
    price: Decimal  # the codec has no way to read a Decimal back


@dataclasses.dataclass(frozen=True)
class Order:
    lines: list[Priced]


@dataclasses.dataclass
class Shop(Aggregate):
    orders: int = 0

    @apply
    def ordered(self, event: Order) -> None:
        self.orders += 1


@attrs.define
class Ledger(Aggregate):
    """Its events are fine; its state is not: only a snapshot would need to store it."""

    last: Money | None = None

    @command
    def add(self, cmd: AddItem) -> ItemAdded:
        return ItemAdded(cmd.sku, cmd.quantity)

    @apply
    def added(self, event: ItemAdded) -> None:
        self.last = Money(event.quantity)


async def test_a_pydantic_event_of_an_arbitrary_type_is_refused_when_first_used(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        with pytest.raises(DefinitionError) as caught:
            runtime.ref(Till, "t")
    assert str(caught.value).startswith(
        "event type Charged cannot be stored: field 'amount' of Charged is typed Money, which "
        "Pydantic takes as an arbitrary type (arbitrary_types_allowed) and cannot write as JSON"
    )
    assert [e async for e in store.read_all()] == []


async def test_a_dataclass_event_holding_an_unreadable_type_names_the_nested_field(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        with pytest.raises(DefinitionError) as caught:
            runtime.ref(Shop, "s")
    assert str(caught.value).startswith(
        "event type Order cannot be stored: field 'lines' of Order (typed list[Priced]) holds "
        "Priced, whose field 'price' of Priced is typed Decimal, which the codec cannot read back."
    )


def test_the_test_kit_refuses_an_unstorable_event_type_as_the_runtime_does() -> None:
    with pytest.raises(DefinitionError, match="field 'amount' of Charged is typed Money"):
        given(Till)


async def test_an_unstorable_state_is_refused_only_where_snapshots_would_store_it(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Ledger, "l").ask(AddItem("x", 1))
    async with Runtime(store, snapshot_every=10) as runtime:
        with pytest.raises(DefinitionError) as caught:
            runtime.ref(Ledger, "l")
    assert str(caught.value).startswith(
        "the state of aggregate class tests.test_model_types.Ledger cannot be stored: field "
        "'last' of Ledger (typed Money | None) holds Money, which the codec cannot read back."
    )


def test_importing_actorsource_does_not_import_pydantic() -> None:
    code = "import sys, actorsource.testing; print('pydantic' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_an_event_type_with_an_unreadable_field_is_refused_when_it_is_decorated() -> None:
    with pytest.raises(DefinitionError) as caught:

        @event_type("Refunded")
        @dataclasses.dataclass(frozen=True)
        class Refunded:
            amount: Decimal

    assert re.search(
        r"Refunded cannot be stored: field 'amount' of \S*Refunded is typed Decimal, which the "
        "codec cannot read back",
        str(caught.value),
    )


class Measure(pydantic.BaseModel):
    value: float


class Measured(pydantic.BaseModel):
    """Stored rounded: its serializer changes the value on the way to the store."""

    value: float

    @pydantic.field_serializer("value")
    def _rounded(self, value: float) -> float:
        return round(value, 2)


class Gauge(pydantic.BaseModel, Aggregate):
    readings: list[float] = []

    @command
    def measure(self, cmd: Measure) -> Measured:
        return Measured(value=cmd.value)

    @apply
    def measured(self, event: Measured) -> None:
        self.readings.append(event.value)


async def test_a_pydantic_event_that_changes_on_its_way_to_the_store_is_applied_as_stored(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Gauge, "g")
        recorded = await ref.ask(Measure(value=1.23456))
        live = await ref.state()
        assert runtime.passivate_idle() == 1
        reloaded = await ref.state()
    # the state in memory is the one every reload gives, and the reply is the stored event
    assert live == reloaded == Gauge(readings=[1.23])
    assert recorded[0].event == Measured(value=1.23)
