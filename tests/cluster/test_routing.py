"""Routing across members over real TCP: refs on any member reach the owner of the aggregate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio
import attrs
import pytest

from actorsource import (
    Aggregate,
    AskTimeoutError,
    ConcurrencyError,
    InMemoryEventStore,
    Rejected,
    RuntimeClosedError,
    UnknownCommandError,
    apply,
    command,
)
from actorsource._dispatcher import RuntimeState
from actorsource._errors import NotOwnerError, PeerUnavailableError, RemoteError
from actorsource._records import StoredEvent
from actorsource._refs import AggregateRef
from actorsource.cluster._placement import Owner

from .support import (
    Deposit,
    Deposited,
    Explode,
    InsufficientFunds,
    Overdrawn,
    Proxy,
    Wallet,
    Withdraw,
    members,
)


async def test_ask_from_a_member_reaches_the_owner_and_returns_the_recorded_events() -> None:
    async with members(2) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        recorded = await caller.ref(Wallet, "a").ask(Deposit(5), metadata={"who": "x"})
        assert [r.event for r in recorded] == [Deposited(5)]
        assert recorded[0].version == 1 and recorded[0].stream_id == "Wallet-a"
        assert recorded[0].metadata["who"] == "x"
        # the owner holds the live actor, the caller none
        assert owner.runtime._dispatcher.is_live("Wallet-a")
        assert not caller.runtime._dispatcher.is_live("Wallet-a")
        assert await owner.runtime.ref(Wallet, "a").state() == Wallet(5)


async def test_tell_reaches_the_owner_before_a_later_state_request() -> None:
    async with members(2) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        ref = caller.ref(Wallet, "t")
        await ref.tell(Deposit(3))
        await ref.tell(Deposit(4), command_id="told-twice")
        await ref.tell(Deposit(4), command_id="told-twice")
        assert await ref.state() == Wallet(7)
        assert owner.runtime._dispatcher.is_live("Wallet-t")


async def test_tell_nowait_reaches_the_owner() -> None:
    async with members(2) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        ref = caller.ref(Wallet, "n")
        ref.tell_nowait(Deposit(2))
        await asyncio.gather(*caller.routed._tasks)
        assert await owner.runtime.ref(Wallet, "n").state() == Wallet(2)


async def test_state_state_and_version_exists_and_snapshot_are_answered_by_the_owner() -> None:
    store = InMemoryEventStore()
    async with members(2, store=store) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        ref = caller.ref(Wallet, "s")
        assert await ref.exists() is False
        assert not owner.runtime._dispatcher.is_live("Wallet-s")  # exists loaded nothing
        await ref.ask(Deposit(5))
        await ref.ask(Deposit(6))
        assert await ref.exists() is True
        assert await ref.state() == Wallet(11)
        assert await ref.state_and_version() == (Wallet(11), 2)
        assert await ref.snapshot() == 2
        assert [s.version for s in await store.list_snapshots("Wallet-s")] == [2]
        owner.runtime.passivate_idle()
        assert await ref.exists() is True  # from the store, on the owner


async def test_a_registered_rejection_is_raised_as_its_own_class_with_its_attributes() -> None:
    async with members(2) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        with pytest.raises(InsufficientFunds) as caught:
            await caller.ref(Wallet, "r").ask(Withdraw(3))
        assert (caught.value.balance, caught.value.asked) == (0, 3)
        assert caught.value.stream_id == "Wallet-r"
        assert str(caught.value) == "insufficient funds: balance 0, asked 3"


async def test_an_unregistered_rejection_is_still_a_rejected_naming_its_class() -> None:
    async with members(2) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        with pytest.raises(Rejected) as caught:
            await caller.ref(Wallet, "r").ask(Deposit(-1))
        assert type(caught.value) is Rejected
        assert caught.value.remote_type == "tests.cluster.support.Overdrawn"  # type: ignore[attr-defined]
        assert "deposit must be positive, got -1" in str(caught.value)
        assert not isinstance(caught.value, Overdrawn)


async def test_library_and_builtin_errors_are_raised_as_themselves_others_as_remote_error() -> None:
    async with members(2) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        ref = caller.ref(Wallet, "e")
        await ref.ask(Deposit(1))
        with pytest.raises(ConcurrencyError) as conflict:
            await ref.ask(Deposit(1), expected_version=0)
        assert (conflict.value.expected_version, conflict.value.actual_version) == (0, 1)
        with pytest.raises(ValueError, match="exploded on purpose"):
            await ref.ask(Explode("value"))
        with pytest.raises(RemoteError) as remote:
            await ref.ask(Explode("other"))
        assert remote.value.type_name == "tests.cluster.support.Unregistered"
        with pytest.raises(UnknownCommandError) as unknown:
            await ref.ask(Stray(1))
        assert unknown.value.command_type == "Stray"


@attrs.frozen
class Stray:
    n: int


async def test_a_not_owner_reply_invalidates_the_placement_and_the_ask_is_retried() -> None:
    async with members(3) as (caller, stale, owner):
        table = caller.placement.table
        table.own_all(owner.owner)
        shard = caller.placement.shard_of("Wallet-moved")
        caller.placement.stale[shard] = stale.owner  # the caller has not heard of the move
        recorded = await caller.ref(Wallet, "moved").ask(Deposit(1))
        assert [r.version for r in recorded] == [1]
        assert shard in caller.placement.invalidated
        assert owner.runtime._dispatcher.is_live("Wallet-moved")
        assert not stale.runtime._dispatcher.is_live("Wallet-moved")


async def test_a_member_handing_off_a_shard_refuses_and_the_ask_waits_for_the_next_owner() -> None:
    async with members(3) as (caller, old, new):
        table = caller.placement.table
        table.own_all(old.owner)
        shard = caller.placement.shard_of("Wallet-h")
        old.placement.handing_off.add(shard)
        async with anyio.create_task_group() as task_group:
            results: list[int] = []

            async def ask() -> None:
                recorded = await caller.ref(Wallet, "h").ask(Deposit(1))
                results.append(recorded[0].version)

            task_group.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            assert not results
            table.own(shard, None)  # the old owner released it ...
            await anyio.wait_all_tasks_blocked()
            table.own(shard, new.owner)  # ... and the new one took it
        assert results == [1]
        assert new.runtime._dispatcher.is_live("Wallet-h")
        assert not old.runtime._dispatcher.is_live("Wallet-h")


async def test_an_ask_waits_for_an_owner_and_goes_local_when_ownership_comes_here() -> None:
    async with members(2) as (caller, _other):
        table = caller.placement.table
        async with anyio.create_task_group() as task_group:
            results: list[int] = []

            async def ask() -> None:
                recorded = await caller.ref(Wallet, "here").ask(Deposit(1))
                results.append(recorded[0].version)

            task_group.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            assert not results
            table.own_all(caller.owner)
        assert results == [1]
        assert caller.runtime._dispatcher.is_live("Wallet-here")


async def test_an_ask_times_out_while_no_member_owns_the_shard_and_never_runs() -> None:
    async with members(2) as (caller, _other):
        with pytest.raises(AskTimeoutError) as caught:
            await caller.ref(Wallet, "nobody").ask(Deposit(1), timeout=0.05)
        assert caught.value.processed is False
        await anyio.wait_all_tasks_blocked()
        # it stopped looking for an owner
        assert all(task.cancelled() for task in caller.routed._tasks)


async def test_a_message_fails_after_the_route_timeout_when_no_member_takes_the_shard() -> None:
    async with members(2, route_timeout=0.05) as (caller, _other):
        with pytest.raises(PeerUnavailableError, match="no member took shard") as caught:
            await caller.ref(Wallet, "nobody").state()
        assert caught.value.sent is False


class CountingStore(InMemoryEventStore):
    """Counts the idempotency lookups (commands with an explicit id not in the window)."""

    lookups = 0

    async def find_command_events(
        self, stream_id: str, command_ids: Collection[str]
    ) -> list[StoredEvent]:
        self.lookups += 1
        return await super().find_command_events(stream_id, command_ids)


async def test_a_routed_first_attempt_costs_no_lookup_of_its_made_command_id() -> None:
    store = CountingStore()
    async with members(2, store=store) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        ref = caller.ref(Wallet, "cheap")
        for _ in range(3):
            await ref.ask(Deposit(1))
        await ref.tell(Deposit(1))
        assert store.lookups == 0
        await ref.ask(Deposit(1), command_id="given")  # the caller's own id is checked
        assert store.lookups == 1
        recorded = await ref.ask(Deposit(1), command_id="given")
        assert [r.version for r in recorded] == [5]


async def test_a_command_retried_after_its_reply_was_lost_is_applied_once() -> None:
    store = CountingStore()
    async with members(2, store=store) as (caller, owner):
        table = caller.placement.table
        table.own_all(owner.owner)
        async with Proxy(owner.server.address) as proxy:
            shard = caller.placement.shard_of("Wallet-lost")
            caller.placement.stale[shard] = Owner(owner.placement.member_id, proxy.address, 1)
            proxy.cut_replies = True  # the owner applies it, its reply never arrives
            recorded = await caller.ref(Wallet, "lost").ask(Deposit(5))
            assert proxy.replies_cut == 1
        assert [(r.version, r.event) for r in recorded] == [(1, Deposited(5))]
        assert await store.stream_version("Wallet-lost") == 1
        assert store.lookups == 1  # the retry, not the first attempt
        assert await caller.ref(Wallet, "lost").state() == Wallet(5)


async def test_a_stream_of_a_category_the_owner_does_not_use_is_refused_clearly() -> None:
    async with members(2) as (caller, owner):
        caller.placement.table.own_all(owner.owner)
        decider = caller.runtime.ref(Stranger, "x").decider
        ref: AggregateRef[Any] = AggregateRef(caller.routed, decider, "x", "Stranger-x")
        with pytest.raises(LookupError, match="no aggregate of stream category 'Stranger'"):
            await ref.ask(Deposit(1))


@attrs.define
class Stranger(Aggregate):
    n: int = 0

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        return Deposited(cmd.amount)

    @apply
    def deposited(self, event: Deposited) -> None:
        self.n += event.amount


async def test_a_message_for_a_shard_owned_here_goes_to_the_local_dispatcher() -> None:
    async with members(2) as (caller, _other):
        caller.placement.table.own_all(caller.owner)
        await caller.ref(Wallet, "mine").ask(Deposit(1))
        assert caller.runtime._dispatcher.is_live("Wallet-mine")
        assert not caller.routed._tasks


#: run once by the next Touch decided: the shard moves away, and the decide is refused as a
#: fenced append would be (not stored, not here)
FENCE_ONCE: list[Callable[[], None]] = []


@attrs.frozen
class Touch:
    pass


@attrs.frozen
class Touched:
    pass


@attrs.define
class Fenceable(Aggregate):
    touches: int = 0

    @command
    def touch(self, cmd: Touch) -> Touched:
        if FENCE_ONCE:
            FENCE_ONCE.pop()()
            raise NotOwnerError(0, 1, "m0")
        return Touched()

    @apply
    def touched(self, event: Touched) -> None:
        self.touches += 1


async def test_a_local_ask_refused_as_not_here_is_routed_to_the_new_owner() -> None:
    async with members(2) as (first, second):
        table = first.placement.table
        table.own_all(first.owner)
        for member in (first, second):
            member.runtime.ref(Fenceable, "warm-up")
        decider = first.runtime.ref(Fenceable, "f").decider
        ref = AggregateRef(first.routed, decider, "f", "Fenceable-f")
        shard = first.placement.shard_of("Fenceable-f")
        FENCE_ONCE.append(lambda: table.own(shard, second.owner))
        recorded = await ref.ask(Touch())
        assert [r.version for r in recorded] == [1]
        assert shard in first.placement.invalidated
        assert second.runtime._dispatcher.is_live("Fenceable-f")
        assert await ref.state() == Fenceable(1)


async def test_closing_fails_the_messages_on_their_way_and_refuses_new_ones() -> None:
    async with members(2) as (caller, _other):
        ref = caller.ref(Wallet, "closing")  # no member owns its shard: it waits for one
        failures: list[BaseException] = []

        async def send(operation: Callable[[], Awaitable[object]]) -> None:
            try:
                await operation()
            except RuntimeClosedError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(send, lambda: ref.ask(Deposit(1)))
            task_group.start_soon(send, lambda: ref.tell(Deposit(1)))
            task_group.start_soon(send, ref.state)
            await anyio.wait_all_tasks_blocked()
            caller.routed.close()
        assert len(failures) == 3
        assert "outcome is unknown" in str(failures[0])
        with pytest.raises(RuntimeClosedError):
            await ref.ask(Deposit(1))
        with pytest.raises(RuntimeClosedError):
            ref.tell_nowait(Deposit(1))


async def test_an_owner_whose_runtime_closed_answers_not_here_and_the_ask_moves_on() -> None:
    async with members(3) as (caller, closed, owner):
        caller.placement.table.own_all(owner.owner)
        shard = caller.placement.shard_of("Wallet-c")
        caller.placement.stale[shard] = closed.owner
        closed.placement.accepting = lambda shard: True  # type: ignore[method-assign]
        closed.runtime._dispatcher.state = RuntimeState.CLOSING  # it owns it, but closes
        try:
            recorded = await caller.ref(Wallet, "c").ask(Deposit(1))
        finally:
            closed.runtime._dispatcher.state = RuntimeState.OPEN
        assert [r.version for r in recorded] == [1]
        assert shard in caller.placement.invalidated
        assert owner.runtime._dispatcher.is_live("Wallet-c")
