"""The runtime's semantics (issue: foundation), against every store."""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

import actorsource._actor as actor_module
from actorsource import (
    ActorFailedError,
    ActorsourceError,
    Aggregate,
    AskTimeoutError,
    Backoff,
    CodecError,
    ConcurrencyError,
    Decider,
    DefinitionError,
    EventApplyError,
    EventStore,
    InMemoryEventStore,
    InvalidEventError,
    MailboxFullError,
    NewEvent,
    Rejected,
    Runtime,
    RuntimeClosedError,
    SQLiteEventStore,
    StoredEvent,
    StoreError,
    UnknownCommandError,
    apply,
    command,
)

from .clock import ManualClock
from .conftest import make_store
from .domain import (
    Account,
    Attach,
    Attached,
    Deposit,
    Deposited,
    Misbehave,
    Noop,
    Opaque,
    Poke,
    Poked,
    Withdraw,
)
from .faults import FaultyStore


async def stored_events(store: EventStore, stream_id: str) -> list[StoredEvent]:
    return [e async for e in store.read_stream(stream_id)]


async def all_events(store: EventStore) -> list[StoredEvent]:
    return [e async for e in store.read_all()]


# -- the basic contract ---------------------------------------------------------------------


async def test_ask_returns_recorded_events_with_versions_and_positions(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        first = await runtime.ref(Account, "a").ask(Deposit(10), metadata={"user": "u1"})
        other = await runtime.ref(Account, "b").ask(Deposit(1))
        second = await runtime.ref(Account, "a").ask(Deposit(20))
    assert [(r.event, r.version, r.position) for r in first + other + second] == [
        (Deposited(10), 1, 1),
        (Deposited(1), 1, 2),
        (Deposited(20), 2, 3),
    ]
    assert first[0].stream_id == "Account-a"
    command_id = first[0].metadata["command_id"]
    assert first[0].metadata == {
        "correlation_id": command_id,
        "causation_id": command_id,
        "command_id": command_id,
        "user": "u1",
    }
    assert first[0].recorded_at.tzinfo is not None
    stored = await stored_events(store, "Account-a")
    assert [(e.type, e.data, e.event_id) for e in stored] == [
        ("Deposited", {"amount": 10}, first[0].event_id),
        ("Deposited", {"amount": 20}, second[0].event_id),
    ]
    assert stored[0].metadata == first[0].metadata


async def test_command_returning_none_stores_nothing_and_replies_empty(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        assert await runtime.ref(Account, "a").ask(Noop()) == []
    assert await all_events(store) == []


async def test_a_batch_outcome_used_again_carries_nothing_of_the_batch_before(
    store: EventStore,
) -> None:
    with anyio.fail_after(10):
        async with Runtime(store) as runtime:
            ref = runtime.ref(Account, "a")
            await ref.ask(Deposit(1))  # its outcome, replied, is kept for the next batch
            spare = runtime._context.spare_outcomes
            assert len(spare) == 1
            kept = spare[0]
            with pytest.raises(Rejected):
                await ref.ask(Withdraw(100))  # an error in the results
            assert spare == [kept]
            keyed = await ref.ask(Deposit(2), command_id="c-1")  # an explicit id
            assert await ref.ask(Noop()) == []  # no events at all
            plain = await ref.ask(Deposit(3))
            assert spare == [kept]  # the same outcome served every batch

    assert [(r.event, r.version, r.metadata["command_id"]) for r in keyed] == [
        (Deposited(2), 2, "c-1")
    ]
    assert [(r.event, r.version) for r in plain] == [(Deposited(3), 3)]
    assert plain[0].metadata["command_id"] != "c-1"
    assert [e.type for e in await all_events(store)] == ["Deposited"] * 3


@pytest.mark.parametrize("broken", ["decide_batch", "reply"])
async def test_a_bug_while_deciding_or_answering_fails_the_caller_instead_of_leaving_it_waiting(
    store: EventStore, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    def bug(*_: object) -> None:
        raise RuntimeError(f"a bug in {broken}")

    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))  # loaded and working
        monkeypatch.setattr(actor_module, broken, bug)  # as the actor calls it
        with anyio.fail_after(10), pytest.raises(RuntimeError, match=f"a bug in {broken}"):
            await ref.ask(Deposit(2))


async def test_ref_exposes_stream_id_and_does_no_io(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "never-opened.db")
    runtime = Runtime(store)
    ref = runtime.ref(Account, "acc-1")
    assert ref.stream_id == "Account-acc-1"
    assert not (tmp_path / "never-opened.db").exists()


async def test_state_is_a_deep_copy_that_cannot_change_the_actor(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(5))
        copy = await ref.state()
        copy.history.append(1000)
        copy.balance = -1
        assert await ref.state() == Account(balance=5, history=[5])


async def test_state_sees_every_message_sent_before_it(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        for amount in range(1, 51):
            await ref.tell(Deposit(amount))
        state = await ref.state()
    assert state.balance == sum(range(1, 51))


@attrs.frozen
class Build:
    floors: int


@attrs.frozen
class Built:
    floors: int


@attrs.define
class Tower(Aggregate):
    """A state that can be nested deeper than a deep copy reaches."""

    floors: Any = attrs.Factory(list)
    builds: int = 0

    @command
    def build(self, cmd: Build) -> Built:
        return Built(cmd.floors)

    @apply
    def built(self, event: Built) -> None:
        floors: Any = []
        for _ in range(event.floors):
            floors = [floors]
        self.floors = floors
        self.builds += 1


async def test_state_that_cannot_be_copied_fails_its_request_and_the_actor_goes_on(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Tower, "t")
        await ref.ask(Build(sys.getrecursionlimit()))
        with anyio.fail_after(30):  # a guard: an unanswered request would wait for ever
            with pytest.raises(ActorsourceError) as caught:
                await ref.state()
        assert str(caught.value).startswith(
            "could not copy the state of 'Tower-t': RecursionError: maximum recursion depth"
        )
        assert isinstance(caught.value.__cause__, RecursionError)
        await ref.ask(Build(1))  # served by the same actor, its state intact
        state = await ref.state()
        assert (state.floors, state.builds) == ([[]], 2)
        assert runtime.statistics().activations == 1
        assert runtime.statistics().actor_failures == 0


# -- ordering and concurrency ---------------------------------------------------------------


async def test_concurrent_asks_to_one_aggregate_keep_each_senders_order(
    store: EventStore,
) -> None:
    senders, per_sender = 20, 15
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "hot")

        async def sender(n: int) -> None:
            for i in range(per_sender):
                await ref.ask(Deposit(n * 1000 + i + 1))

        async with anyio.create_task_group() as tg:
            for n in range(1, senders + 1):
                tg.start_soon(sender, n)
    stored = await stored_events(store, "Account-hot")
    assert [e.version for e in stored] == list(range(1, senders * per_sender + 1))
    by_sender: dict[int, list[int]] = {}
    for event in stored:
        amount = event.data["amount"]
        by_sender.setdefault(amount // 1000, []).append(amount % 1000)
    assert by_sender == {n: list(range(1, per_sender + 1)) for n in range(1, senders + 1)}


async def test_tells_from_one_sender_are_applied_in_order(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        for amount in range(1, 101):
            ref.tell_nowait(Deposit(amount))
        assert (await ref.state()).history == list(range(1, 101))


async def test_many_aggregates_run_concurrently_and_positions_stay_gap_free(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime, anyio.create_task_group() as tg:
        for n in range(50):
            for _ in range(4):
                tg.start_soon(runtime.ref(Account, f"acc-{n}").ask, Deposit(1))
    events = await all_events(store)
    assert [e.position for e in events] == list(range(1, 201))
    for n in range(50):
        assert [e.version for e in await stored_events(store, f"Account-acc-{n}")] == [1, 2, 3, 4]


# -- errors from deciding reach the caller; the actor goes on -----------------------------------


async def test_rejected_reaches_the_caller_unchanged_and_stores_nothing(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(5))
        with pytest.raises(Rejected, match="insufficient funds: balance 5, asked 9"):
            await ref.ask(Withdraw(9))
        await ref.ask(Withdraw(5))
        assert (await ref.state()).balance == 0
    assert [e.type for e in await all_events(store)] == ["Deposited", "Withdrew"]


class InsufficientFunds(Rejected):
    pass


@attrs.frozen
class Spend:
    amount: int


@attrs.frozen
class Spent:
    amount: int


@attrs.define
class Wallet(Aggregate):
    coins: int = 3

    @command
    def spend(self, cmd: Spend) -> Spent:
        if cmd.amount > self.coins:
            raise InsufficientFunds(f"{cmd.amount} > {self.coins}")
        return Spent(cmd.amount)

    @apply
    def spent(self, event: Spent) -> None:
        self.coins -= event.amount


async def test_rejected_subclass_is_the_same_object_the_handler_raised(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        with pytest.raises(InsufficientFunds) as caught:
            await runtime.ref(Wallet, "w").ask(Spend(10))
    assert str(caught.value) == "10 > 3"
    assert caught.value.__traceback__ is not None


async def test_unknown_command_names_the_command_type_and_the_aggregate(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(UnknownCommandError) as caught:
            await ref.ask(Spend(1))
        await ref.ask(Deposit(1))
    assert caught.value.command_type == "Spend"
    assert caught.value.aggregate == "Account"
    assert "Account has no @command handler for command type 'Spend'" in str(caught.value)
    assert len(await all_events(store)) == 1


@attrs.define
class Sloppy(Aggregate):
    count: int = 0

    @command
    def misbehave(self, cmd: Misbehave) -> Any:
        return cmd.returned

    @apply
    def spent(self, event: Spent) -> None:
        self.count += 1


@pytest.mark.parametrize("returned", ["Spent", {"amount": 1}, 42, [Spent(1), "x"]])
async def test_handler_returning_a_non_event_is_refused_and_stores_nothing(
    store: EventStore, returned: Any
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Sloppy, "s")
        with pytest.raises(InvalidEventError, match="not an event type of Sloppy"):
            await ref.ask(Misbehave(returned))
        assert await ref.ask(Misbehave([Spent(1), Spent(2)])) != []
        assert (await ref.state()).count == 2
    assert [e.version for e in await all_events(store)] == [1, 2]


# -- errors from applying, encoding or storing stop the actor's state -------------------------


@attrs.frozen
class Explode:
    after: int


@attrs.frozen
class Exploded:
    after: int


@attrs.define
class Fragile(Aggregate):
    pokes: int = 0

    @command
    def explode(self, cmd: Explode) -> list[Poked | Exploded]:
        return [Poked()] * cmd.after + [Exploded(cmd.after)]

    @command
    def poke(self, cmd: Poke) -> Poked:
        return Poked()

    @apply
    def poked(self, event: Poked) -> None:
        self.pokes += 1

    @apply
    def exploded(self, event: Exploded) -> None:
        raise ValueError("boom")


async def test_failing_applier_names_the_event_stores_nothing_and_the_actor_reloads(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Fragile, "f")
        await ref.ask(Poke())
        with pytest.raises(EventApplyError) as caught:
            await ref.ask(Explode(after=2))  # two Poked applied in memory, then the failure
        assert caught.value.event_type == "Exploded"
        assert "ValueError: boom" in str(caught.value)
        assert isinstance(caught.value.__cause__, ValueError)
        # the half-applied state was discarded and rebuilt from the store
        assert (await ref.state()).pokes == 1
        await ref.ask(Poke())
        assert (await ref.state()).pokes == 2
        assert runtime.statistics().activations == 2
    assert [e.type for e in await all_events(store)] == ["Poked", "Poked"]


async def test_failing_applier_in_a_batch_keeps_the_commands_before_and_after_it(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Fragile, "f")
        async with anyio.create_task_group() as tg:
            # queued together, so the actor decides them as one batch
            results: dict[str, Any] = {}

            async def ask(name: str, cmd: object) -> None:
                try:
                    results[name] = len(await ref.ask(cmd))
                except EventApplyError as exc:
                    results[name] = exc.event_type

            tg.start_soon(ask, "first", Poke())
            tg.start_soon(ask, "bad", Explode(after=1))
            tg.start_soon(ask, "last", Poke())
        assert results == {"first": 1, "bad": "Exploded", "last": 1}
        assert (await ref.state()).pokes == 2
    assert [e.version for e in await stored_events(store, "Fragile-f")] == [1, 2]


@attrs.define
class Box(Aggregate):
    things: int = 0

    @command
    def attach(self, cmd: Attach) -> Attached:
        return Attached(Opaque())

    @command
    def poke(self, cmd: Poke) -> Poked:
        return Poked()

    @apply
    def attached(self, event: Attached) -> None:
        self.things += 1

    @apply
    def poked(self, event: Poked) -> None:
        pass


async def test_event_the_codec_cannot_encode_names_its_type_and_is_never_stored(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Box, "b")
        with pytest.raises(CodecError, match="Attached"):
            await ref.ask(Attach())
        assert (await ref.state()).things == 0
        await ref.ask(Poke())
    assert [e.type for e in await all_events(store)] == ["Poked"]


@attrs.frozen
class Put:
    value: Any


@attrs.frozen
class WasPut:
    """A field typed Any: JSON gives a tuple back as a list, bytes as a str, ..."""

    value: Any


@attrs.frozen
class Count:
    by_key: dict[int, int]


@attrs.frozen
class Counted:
    """Typed, but int keys are written as str, which an int key cannot be read from."""

    by_key: dict[int, int]


@attrs.define
class Shelf(Aggregate):
    items: list[Any] = attrs.Factory(list)

    @command
    def put(self, cmd: Put) -> WasPut:
        return WasPut(cmd.value)

    @apply
    def was_put(self, event: WasPut) -> None:
        self.items.append(event.value)


@attrs.define
class Tally(Aggregate):
    counts: list[dict[int, int]] = attrs.Factory(list)

    @command
    def count(self, cmd: Count) -> Counted:
        return Counted(cmd.by_key)

    @apply
    def counted(self, event: Counted) -> None:
        self.counts.append(event.by_key)


ANY_VALUES = {
    "a tuple": (1, 2),
    "bytes": b"\x00\xffraw",
    "a set": {3},
    "a datetime": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
}


@pytest.mark.parametrize("value", ANY_VALUES.values(), ids=ANY_VALUES.keys())
@pytest.mark.parametrize("snapshot_every", [None, 2])
async def test_event_field_typed_any_is_applied_as_the_store_gives_it_back(
    store: EventStore, value: object, snapshot_every: int | None
) -> None:
    async with Runtime(store, snapshot_every=snapshot_every) as runtime:
        ref = runtime.ref(Shelf, "s")
        await ref.ask(Put("first"))
        recorded = await ref.ask(Put(value))
        await ref.ask(Put([value] if not isinstance(value, set) else "last"))
        live = await ref.state()
        assert runtime.passivate_idle() == 1
        rehydrated = await ref.state()
        assert runtime.statistics().activations == 2
    assert rehydrated == live
    assert [type(item) for item in rehydrated.items] == [type(item) for item in live.items]
    # the reply holds the event as stored, as every reader of the store sees it
    stored = [e async for e in store.read_stream("Shelf-s")]
    assert recorded[0].event == WasPut(live.items[1]) == WasPut(stored[1].data["value"])


async def test_typed_event_that_would_not_decode_again_is_refused_when_first_used(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        with pytest.raises(DefinitionError) as caught:
            runtime.ref(Tally, "t")
        await runtime.ref(Shelf, "s").ask(Put("next"))
    assert str(caught.value).startswith(
        "event type Counted cannot be stored: field 'by_key' of Counted is typed "
        "dict[int, int]: JSON holds the keys of an object as text, so a key of type int would "
        "not read back; key it by str (or a str enum)."
    )
    assert [e.type for e in await all_events(store)] == ["WasPut"]


@attrs.define
class Ledger(Aggregate):
    """Another aggregate that claims Account's stream category."""

    stream_category = "Account"
    total: int = 0

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        return Deposited(cmd.amount)

    @apply
    def deposited(self, event: Deposited) -> None:
        self.total += event.amount


async def test_two_aggregates_of_one_category_in_a_runtime_are_refused_naming_both(
    store: EventStore,
) -> None:
    other_decider = Decider(
        name="Account",
        initial_state=0,
        decide=lambda command, state: None,
        evolve=lambda state, event: state,
        event_types=[Deposited],
    )
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "1").ask(Deposit(1))
        with pytest.raises(DefinitionError) as caught:
            runtime.ref(Ledger, "1")
        message = str(caught.value)
        for fragment in (
            "aggregate class tests.domain.Account",
            "aggregate class tests.test_runtime.Ledger",
            "both use the stream category 'Account'",
        ):
            assert fragment in message, f"{fragment!r} not in {message!r}"
        with pytest.raises(DefinitionError, match=r"Decider 'Account' \(decide=tests\."):
            runtime.ref(other_decider, "1")
        with pytest.raises(DefinitionError, match="both use the stream category"):
            async for _ in runtime.subscribe(aggregates=[Ledger], live=False):
                pass
        await runtime.ref(Account, "2").ask(Deposit(2))  # the first one is served as before
    async with Runtime(store) as runtime:  # another runtime may use the other one
        assert await runtime.ref(Ledger, "1").state() == Ledger(total=1)
    assert [(e.stream_id, e.version) for e in await all_events(store)] == [
        ("Account-1", 1),
        ("Account-2", 1),
    ]


async def test_store_failure_reaches_the_caller_and_the_next_message_reloads(
    store: EventStore,
) -> None:
    faulty = FaultyStore(store)
    clock = ManualClock()
    async with Runtime(faulty, supervision=Backoff(base=0.05, clock=clock)) as runtime:
        ref = runtime.ref(Account, "a")
        other = runtime.ref(Account, "b")
        await ref.ask(Deposit(1))
        faulty.fail_appends = 1
        with pytest.raises(StoreError, match="injected: disk full"):
            await ref.ask(Deposit(2))
        await other.ask(Deposit(7))  # other aggregates never notice
        appends = faulty.appends
        with pytest.raises(ActorFailedError, match="appending failed: injected: disk full"):
            await ref.ask(Deposit(9))  # within the backoff: fails at once, store untouched
        assert faulty.appends == appends
        clock.advance(0.05)  # the backoff after one failure (50 ms) has passed
        await ref.ask(Deposit(3))
        assert (await ref.state()).history == [1, 3]
        assert runtime.statistics().actor_failures == 1
    assert [e.data["amount"] for e in await stored_events(store, "Account-a")] == [1, 3]


async def test_load_failure_backs_off_without_touching_the_store_then_recovers(
    store: EventStore,
) -> None:
    faulty = FaultyStore(store)
    clock = ManualClock()
    async with Runtime(faulty, supervision=Backoff(base=0.05, clock=clock)) as runtime:
        ref = runtime.ref(Account, "a")
        faulty.fail_reads = 1
        with pytest.raises(ActorFailedError, match="loading the aggregate failed"):
            await ref.ask(Deposit(1))
        loads = faulty.snapshot_loads
        with pytest.raises(ActorFailedError, match="failed 1 time"):
            await ref.ask(Deposit(2))  # within the backoff: fails at once
        assert faulty.snapshot_loads == loads  # the store was not touched
        await runtime.ref(Account, "other").ask(Deposit(5))  # the others are served
        clock.advance(0.05)  # the backoff after one failure (50 ms) has passed
        await ref.ask(Deposit(3))
        assert (await ref.state()).history == [3]


async def test_activations_are_limited_in_number(store: EventStore) -> None:
    class CountingLoads(FaultyStore):
        def __init__(self, inner: EventStore) -> None:
            super().__init__(inner)
            self.loading = self.peak = 0

        async def load_snapshot(self, stream_id: str, max_version: int | None = None) -> Any:
            self.loading += 1
            self.peak = max(self.peak, self.loading)
            try:
                await anyio.lowlevel.checkpoint()  # let the other activations pile up
                return await super().load_snapshot(stream_id, max_version)
            finally:
                self.loading -= 1

    counting = CountingLoads(store)
    async with Runtime(counting, max_activations=3) as runtime, anyio.create_task_group() as tg:
        for n in range(30):
            tg.start_soon(runtime.ref(Account, f"cold-{n}").ask, Deposit(1))
    assert counting.peak == 3
    assert len(await all_events(store)) == 30


async def test_a_load_slower_than_the_activation_timeout_fails_clearly(
    store: EventStore,
) -> None:
    class SlowLoads(FaultyStore):
        async def load_snapshot(self, stream_id: str, max_version: int | None = None) -> Any:
            await anyio.sleep(1)  # a store that answers too late
            return await super().load_snapshot(stream_id, max_version)

    async with Runtime(SlowLoads(store), activation_timeout=0.05) as runtime:
        with pytest.raises(ActorFailedError, match=r"loading took longer than 0\.05 s"):
            await runtime.ref(Account, "a").ask(Deposit(1))


# -- version conflicts ---------------------------------------------------------------------


async def test_conflict_reloads_decides_again_and_sees_the_other_writers_event(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(10))
        # another writer appends behind the actor's back
        await store.append("Account-a", 1, [NewEvent("foreign-1", "Withdrew", {"amount": 10}, {})])
        with pytest.raises(Rejected, match="balance 0"):
            await ref.ask(Withdraw(5))  # decided on balance 10, conflict, reloaded: balance 0
        recorded = await ref.ask(Deposit(4))
        assert recorded[0].version == 3
        assert runtime.statistics().conflicts_retried == 1


async def test_conflict_after_all_retries_raises_concurrency_error_with_versions(
    store: EventStore,
) -> None:
    class AlwaysAhead(FaultyStore):
        async def append(self, stream_id: str, expected_version: int | None, events: Any) -> Any:
            # someone always appends first
            await self.inner.append(
                stream_id, None, [NewEvent(f"f-{self.appends}", "Deposited", {"amount": 1}, {})]
            )
            return await super().append(stream_id, expected_version, events)

    async with Runtime(AlwaysAhead(store), max_conflict_retries=3) as runtime:
        with pytest.raises(ConcurrencyError) as caught:
            await runtime.ref(Account, "a").ask(Deposit(5))
    error = caught.value
    assert error.stream_id == "Account-a"
    assert (error.expected_version, error.actual_version, error.retries) == (3, 4, 3)
    assert "retried 3 times" in str(error)
    assert all(e.event_id.startswith("f-") for e in await all_events(store))


# -- restart, snapshots, passivation ----------------------------------------------------------


async def test_restart_from_disk_rebuilds_every_aggregate(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    async with Runtime(SQLiteEventStore(path)) as runtime:
        for n in range(5):
            for amount in range(1, n + 2):
                await runtime.ref(Account, f"a{n}").ask(Deposit(amount))
    async with Runtime(SQLiteEventStore(path)) as runtime:
        for n in range(5):
            state = await runtime.ref(Account, f"a{n}").state()
            assert state.history == list(range(1, n + 2))
        assert runtime.statistics().events_replayed == sum(range(1, 6))


async def test_rehydration_uses_the_snapshot_and_replays_only_the_tail(
    store_kind: str, tmp_path: Path
) -> None:
    async with Runtime(make_store(store_kind, tmp_path), snapshot_every=10) as runtime:
        # with the memory store the data lives in the store object: keep it
        store = runtime.store
        ref = runtime.ref(Account, "a")
        for _ in range(25):
            await ref.ask(Deposit(1))
        assert runtime.statistics().snapshots_saved == 2
    snapshot = None
    if store_kind != "memory":  # a new store object on the same database
        store = make_store(store_kind, tmp_path)
    else:
        assert isinstance(store, InMemoryEventStore)
        store = _reopen(store)
    async with store:
        snapshot = await store.load_snapshot("Account-a")
        assert snapshot is not None and snapshot.version == 20
        async with Runtime(store) as runtime:
            state = await runtime.ref(Account, "a").state()
            assert state.balance == 25 and len(state.history) == 25
            assert runtime.statistics().events_replayed == 5


def _reopen(store: InMemoryEventStore) -> InMemoryEventStore:
    """A new open-able memory store holding the same data (memory stores cannot reopen)."""
    fresh = InMemoryEventStore()
    fresh.__dict__.update({k: v for k, v in store.__dict__.items() if k != "_state"})
    return fresh


async def test_snapshot_of_another_schema_version_is_ignored(store: EventStore) -> None:
    async with Runtime(store, snapshot_every=2) as runtime:
        for _ in range(4):
            await runtime.ref(Account, "a").ask(Deposit(1))

    @attrs.define
    class AccountV2(Account):
        snapshot_version = 2
        stream_category = "Account"

    async with Runtime(store) as runtime:
        state = await runtime.ref(AccountV2, "a").state()
        assert state.balance == 4
        assert runtime.statistics().events_replayed == 4


async def test_snapshot_that_cannot_be_decoded_is_skipped_with_a_warning(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    from actorsource import SnapshotRecord

    async with Runtime(store) as runtime:
        for _ in range(3):
            await runtime.ref(Account, "a").ask(Deposit(1))
    await store.save_snapshot(SnapshotRecord("Account-a", 3, {"state": {"balance": "lots"}}, 1))
    with caplog.at_level(logging.WARNING, logger="actorsource"):
        async with Runtime(store) as runtime:
            assert (await runtime.ref(Account, "a").state()).balance == 3
            assert runtime.statistics().events_replayed == 3
    assert any("snapshot cannot be decoded" in r.getMessage() for r in caplog.records)


async def test_snapshots_are_finished_before_the_runtime_closes(tmp_path: Path) -> None:
    class SlowSnapshots(FaultyStore):
        async def save_snapshot(self, snapshot: Any) -> None:
            await anyio.sleep(0.05)  # a slow disk: the save is still running at exit
            await super().save_snapshot(snapshot)

    path = tmp_path / "s.db"
    async with Runtime(SlowSnapshots(SQLiteEventStore(path)), snapshot_every=1) as runtime:
        for _ in range(10):
            await runtime.ref(Account, "a").ask(Deposit(1))
    async with SQLiteEventStore(path) as store:
        snapshot = await store.load_snapshot("Account-a")
    assert snapshot is not None and snapshot.version == 10
    assert snapshot.state == {"state": {"balance": 10, "history": [1] * 10}}


async def wait_until(condition: Any, limit: float = 5.0) -> None:
    """Poll a condition that a timer (the behaviour under test) makes true."""
    with anyio.fail_after(limit):
        while not condition():  # noqa: ASYNC110  # passivation is timer-driven, not an event
            await anyio.sleep(0.005)


async def test_idle_actor_passivates_and_rehydrates_on_its_next_message(
    store: EventStore,
) -> None:
    async with Runtime(store, passivate_after=0.05) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(3))
        assert runtime.statistics().active_actors == 1
        await wait_until(lambda: runtime.statistics().passivations == 1)
        assert runtime.statistics().active_actors == 0
        await ref.ask(Deposit(4))
        stats = runtime.statistics()
        assert (stats.activations, stats.events_replayed) == (2, 1)
        assert (await ref.state()).history == [3, 4]


async def test_passivate_after_set_on_an_open_runtime_takes_effect_at_once() -> None:
    async with Runtime(InMemoryEventStore()) as runtime:  # made without passivation
        await runtime.ref(Account, "a").ask(Deposit(1))
        runtime.passivate_after = 0.01
        await wait_until(lambda: runtime.statistics().passivations == 1)
    async with Runtime(InMemoryEventStore(), passivate_after=3600) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(1))
        runtime.passivate_after = 0.01  # the timer must not sleep out the hour
        await wait_until(lambda: runtime.statistics().passivations == 1)
        with pytest.raises(ValueError, match="passivate_after must be >= 0 seconds or None"):
            runtime.passivate_after = -1
        assert runtime.passivate_after == 0.01


async def test_passivated_actor_rehydrates_from_snapshot(store: EventStore) -> None:
    async with Runtime(store, passivate_after=0.02, snapshot_every=5) as runtime:
        ref = runtime.ref(Account, "a")
        for _ in range(7):
            await ref.ask(Deposit(1))
        await wait_until(
            lambda: (
                runtime.statistics().passivations == 1 and runtime.statistics().snapshots_saved == 1
            )
        )
        assert (await ref.state()).balance == 7
        assert runtime.statistics().events_replayed == 2


async def test_passivation_churn_loses_and_reorders_no_message(store: EventStore) -> None:
    async with Runtime(store, passivate_after=0.0) as runtime:

        async def sender(n: int) -> None:
            ref = runtime.ref(Account, f"acc-{n % 5}")
            for i in range(40):
                if i % 3:
                    await ref.tell(Deposit(n * 1000 + i))
                else:
                    await ref.ask(Deposit(n * 1000 + i))
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for n in range(1, 21):
                tg.start_soon(sender, n)
        await wait_until(lambda: runtime.statistics().queued_messages == 0)
        assert runtime.statistics().passivations > 5
    per_sender: dict[int, list[int]] = {}
    for event in await all_events(store):
        amount = event.data["amount"]
        per_sender.setdefault(amount // 1000, []).append(amount % 1000)
    assert per_sender == {n: list(range(40)) for n in range(1, 21)}


async def test_max_active_bounds_live_actors_at_every_moment(store: EventStore) -> None:
    peak = 0
    async with Runtime(store, max_active=3) as runtime:
        done = anyio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, runtime.statistics().active_actors)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with anyio.create_task_group() as senders:
                for n in range(20):
                    for _ in range(3):
                        senders.start_soon(runtime.ref(Account, f"a{n}").ask, Deposit(1))
            done.set()
        assert runtime.statistics().active_actors <= 3
        assert runtime.statistics().passivations >= 17
        for n in range(20):
            assert (await runtime.ref(Account, f"a{n}").state()).balance == 3
    assert 1 <= peak <= 3


# -- mailboxes --------------------------------------------------------------------------------


async def test_tell_nowait_on_a_full_mailbox_raises_naming_the_aggregate(
    store: EventStore,
) -> None:
    async with Runtime(store, mailbox_size=2) as runtime:
        ref = runtime.ref(Account, "a")
        ref.tell_nowait(Deposit(1))
        ref.tell_nowait(Deposit(2))
        with pytest.raises(MailboxFullError, match="mailbox of 'Account-a' is full"):
            ref.tell_nowait(Deposit(3))
        assert (await ref.state()).history == [1, 2]


async def test_ask_and_tell_wait_for_room_in_a_full_mailbox_in_arrival_order(
    store: EventStore,
) -> None:
    async with Runtime(store, mailbox_size=1) as runtime:
        ref = runtime.ref(Account, "a")

        async def sender(n: int) -> None:
            for i in range(10):
                await (ref.ask if i % 2 else ref.tell)(Deposit(n * 100 + i))

        async with anyio.create_task_group() as tg:
            for n in range(1, 6):
                tg.start_soon(sender, n)
        history = (await ref.state()).history
    assert len(history) == 50
    for n in range(1, 6):
        assert [a % 100 for a in history if a // 100 == n] == list(range(10))


# -- lifecycle ----------------------------------------------------------------------------------


async def test_leaving_the_context_processes_every_accepted_message(tmp_path: Path) -> None:
    path = tmp_path / "drain.db"
    async with Runtime(SQLiteEventStore(path)) as runtime:
        for n in range(10):
            for _ in range(20):
                runtime.ref(Account, f"a{n}").tell_nowait(Deposit(1))
    async with SQLiteEventStore(path) as store:
        assert len(await all_events(store)) == 200


async def test_ref_used_after_close_fails_at_once_saying_the_runtime_is_closed(
    store: EventStore,
) -> None:
    runtime = Runtime(store)
    ref = runtime.ref(Account, "a")
    with pytest.raises(RuntimeClosedError, match="not open yet"):
        await ref.ask(Deposit(1))
    async with runtime:
        await ref.ask(Deposit(1))
    with pytest.raises(RuntimeClosedError, match="runtime is closed"):
        await ref.ask(Deposit(1))
    with pytest.raises(RuntimeClosedError):
        ref.tell_nowait(Deposit(1))
    with pytest.raises(RuntimeClosedError):
        await ref.state()
    with pytest.raises(RuntimeClosedError, match="entered once"):
        async with runtime:
            pass


async def test_runtime_closes_only_a_store_it_opened(tmp_path: Path) -> None:
    own = SQLiteEventStore(tmp_path / "own.db")
    async with Runtime(own):
        assert own.is_open
    assert not own.is_open
    async with SQLiteEventStore(tmp_path / "shared.db") as shared:
        async with Runtime(shared) as runtime:
            await runtime.ref(Account, "a").ask(Deposit(1))
        assert shared.is_open
        assert len(await all_events(shared)) == 1


async def test_statistics_are_an_immutable_record(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(1))
        stats = runtime.statistics()
    assert (stats.active_actors, stats.activations, stats.commands_processed) == (1, 1, 1)
    assert (stats.events_appended, stats.events_replayed, stats.snapshots_saved) == (1, 0, 0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.activations = 5  # type: ignore[misc]


HOSTILE_IDS = [
    "x'); DROP TABLE events;--",
    'quote"s and \\ backslashes',
    "ünïcødé-🙂",
    "k" * 10_000,
    " ",
]


@pytest.mark.parametrize("aggregate_id", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
async def test_hostile_aggregate_ids_are_just_ids(store: EventStore, aggregate_id: str) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "plain").ask(Deposit(1))
        ref = runtime.ref(Account, aggregate_id)
        await ref.ask(Deposit(2))
        assert (await ref.state()).balance == 2
    assert [e.stream_id for e in await all_events(store)] == [
        "Account-plain",
        f"Account-{aggregate_id}",
    ]


@pytest.mark.parametrize("bad_id", ["", None, 42])
async def test_aggregate_id_must_be_a_non_empty_str(store: EventStore, bad_id: Any) -> None:
    with pytest.raises(ValueError, match="non-empty str"):
        Runtime(store).ref(Account, bad_id)


# -- the functional form ------------------------------------------------------------------------


def _decide(command: object, balance: int) -> list[Deposited]:
    if not isinstance(command, Deposit):
        raise UnknownCommandError("Balance", type(command).__name__, ["Deposit"])
    if command.amount <= 0:
        raise Rejected("positive amounts only")
    return [Deposited(command.amount)]


def _evolve(balance: int, event: Deposited) -> int:
    return balance + event.amount


BALANCE = Decider(
    name="Balance",
    initial_state=0,
    decide=_decide,
    evolve=_evolve,
    event_types=[Deposited],
    snapshot_every=3,
)


async def test_a_plain_decider_runs_like_an_aggregate_class(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(BALANCE, "b1")
        for amount in (1, 2, 3, 4):
            await ref.ask(Deposit(amount))
        with pytest.raises(Rejected):
            await ref.ask(Deposit(0))
        assert await ref.state() == 10
    # the snapshot is saved in the background; leaving the runtime waits for it
    assert runtime.statistics().snapshots_saved == 1
    snapshot = await store.load_snapshot("Balance-b1")
    assert snapshot is not None and (snapshot.version, snapshot.state) == (3, {"state": 6})
    async with Runtime(store) as runtime:
        assert await runtime.ref(BALANCE, "b1").state() == 10
        assert runtime.statistics().events_replayed == 1


async def test_mass_passivation_gives_back_the_memory_of_the_actor_tables() -> None:
    import gc
    import tracemalloc

    async with Runtime(InMemoryEventStore()) as runtime:
        await runtime.ref(Account, "warm-up").state()
        runtime.passivate_idle()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(3000):
                await runtime.ref(Account, f"a{n}").state()
            live = tracemalloc.get_traced_memory()[0] - before
            assert runtime.passivate_idle() == 3000
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert runtime.statistics().active_actors == 0
    assert retained < live * 0.05


@pytest.mark.parametrize("snapshot_every", [None, 4])
async def test_rehydration_pages_through_a_long_tail(
    tmp_path: Path, snapshot_every: int | None
) -> None:
    path = tmp_path / "pages.db"
    async with Runtime(SQLiteEventStore(path), snapshot_every=snapshot_every) as runtime:
        for amount in range(1, 12):
            await runtime.ref(Account, "a").ask(Deposit(amount))
    async with Runtime(SQLiteEventStore(path, read_page_size=3)) as runtime:
        state = await runtime.ref(Account, "a").state()
        replayed = runtime.statistics().events_replayed
    assert state.history == list(range(1, 12))
    assert replayed == (11 if snapshot_every is None else 3)


# -- timeouts ---------------------------------------------------------------------------------


class StalledAppends(FaultyStore):
    """Appends wait until released: a store that hangs."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def append(self, stream_id: str, expected_version: int | None, events: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        return await super().append(stream_id, expected_version, events)


async def test_ask_timeout_while_the_append_hangs_says_the_outcome_is_unknown(
    store: EventStore,
) -> None:
    stalled = StalledAppends(store)
    async with Runtime(stalled) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(AskTimeoutError) as caught:
            await ref.ask(Deposit(1), timeout=0.05)
        assert caught.value.processed is True
        assert "outcome is unknown" in str(caught.value)
        # the queued command behind it is withdrawn when its own ask times out
        with pytest.raises(AskTimeoutError) as queued:
            await ref.ask(Deposit(2), timeout=0.05)
        assert queued.value.processed is False
        stalled.release.set()
        assert (await ref.state()).history == [1]  # the first one completed; the second never ran
    assert [e.data["amount"] for e in await all_events(store)] == [1]


async def test_runtime_default_ask_timeout_applies_and_none_waits(store: EventStore) -> None:
    stalled = StalledAppends(store)
    async with Runtime(stalled, ask_timeout=0.05) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(AskTimeoutError, match=r"within 0\.05 s"):
            await ref.ask(Deposit(1))
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(ref.ask, Deposit(2), timeout=None))
            await anyio.sleep(0.1)  # longer than the default: this ask must still be waiting
            stalled.release.set()
    assert [e.data["amount"] for e in await all_events(store)] == [1, 2]


async def test_a_cancelled_ask_still_in_the_mailbox_never_runs(store: EventStore) -> None:
    stalled = StalledAppends(store)
    async with Runtime(stalled) as runtime:
        ref = runtime.ref(Account, "a")
        async with anyio.create_task_group() as tg:
            tg.start_soon(ref.ask, Deposit(1))
            await stalled.entered.wait()  # the first ask is now stuck in the store
            with anyio.move_on_after(0.02):
                await ref.ask(Deposit(2))
            stalled.release.set()
        assert (await ref.state()).history == [1]


async def test_shutdown_deadline_abandons_queued_messages_and_names_the_aggregates(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    stalled = StalledAppends(store)
    outcome: list[BaseException] = []

    async def ask_and_keep_error(ref: Any) -> None:
        try:
            await ref.ask(Deposit(1))
        except Exception as exc:
            outcome.append(exc)

    with caplog.at_level(logging.WARNING, logger="actorsource"):
        async with (
            anyio.create_task_group() as tg,
            Runtime(stalled, shutdown_timeout=0.05) as runtime,
        ):
            ref = runtime.ref(Account, "a")
            tg.start_soon(ask_and_keep_error, ref)
            await stalled.entered.wait()  # its append hangs in the store
            for amount in (2, 3, 4):
                await ref.tell(Deposit(amount))  # queued behind it
    [error] = outcome
    assert isinstance(error, StoreError) and "outcome is unknown" in str(error)
    abandoned = [r for r in caplog.records if "shutdown deadline passed" in r.getMessage()]
    assert abandoned and abandoned[0].abandoned == {"Account-a": 3}  # type: ignore[attr-defined]
    assert await all_events(store) == []


async def test_shutdown_within_the_deadline_processes_everything(tmp_path: Path) -> None:
    path = tmp_path / "deadline.db"
    async with Runtime(SQLiteEventStore(path), shutdown_timeout=30) as runtime:
        for n in range(50):
            runtime.ref(Account, f"a{n % 5}").tell_nowait(Deposit(1))
    async with SQLiteEventStore(path) as store:
        assert len(await all_events(store)) == 50


# -- asks to idle actors are decided in the sender's step -------------------------------------

_CALLER_VALUE: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="unset")


@attrs.frozen
class Peek:
    pass


@attrs.frozen
class Peeked:
    seen: str


@attrs.define
class ContextPeeker(Aggregate):
    seen: list[str] = attrs.Factory(list)

    @command
    def peek(self, cmd: Peek) -> Peeked:
        return Peeked(_CALLER_VALUE.get())

    @apply
    def peeked(self, event: Peeked) -> None:
        self.seen.append(event.seen)


async def test_command_handlers_never_see_the_callers_context_variables(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(ContextPeeker, "p")
        token = _CALLER_VALUE.set("the caller's")
        try:
            await ref.ask(Peek())  # cold: activates first
            await ref.ask(Peek())  # warm and idle: decided in the sender's step
        finally:
            _CALLER_VALUE.reset(token)
        assert (await ref.state()).seen == ["unset", "unset"]


async def test_a_caller_whose_asks_are_all_rejected_still_lets_other_tasks_run(
    store: EventStore,
) -> None:
    other_ran = anyio.Event()

    async def other() -> None:
        other_ran.set()

    async with Runtime(store) as runtime, anyio.create_task_group() as tg:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))  # loaded and idle: later asks are answered in their step
        tg.start_soon(other)
        for _ in range(20):
            with pytest.raises(Rejected):
                await ref.ask(Deposit(0))
            if other_ran.is_set():
                break
        assert other_ran.is_set()
