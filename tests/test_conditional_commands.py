"""Conditional commands: state with its version (ETags), asks refused when the stream moved on
(If-Match), and whether an aggregate exists."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from actorsource import ConcurrencyError, EventStore, InMemoryEventStore, NewEvent, Runtime
from actorsource._errors import Rejected

from .domain import Account, Deposit, Withdraw


async def test_state_and_version_returns_the_state_with_the_version_it_is_at(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        assert await ref.state_and_version() == (Account(), 0)
        await ref.ask(Deposit(5))
        await ref.tell(Deposit(7))  # sent before: seen
        state, version = await ref.state_and_version()
        assert (state.balance, version) == (12, 2)
        state.balance = 1_000  # a copy: the actor keeps its own
    async with Runtime(store) as runtime:  # loaded from the store: the same pair
        state, version = await runtime.ref(Account, "a").state_and_version()
        assert (state.balance, version) == (12, 2)


async def test_ask_at_the_expected_version_is_decided_and_stored(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        first = await ref.ask(Deposit(5), expected_version=0)
        second = await ref.ask(Deposit(7), expected_version=1)
        assert [r.version for r in first + second] == [1, 2]
        assert (await ref.state()).balance == 12


async def test_ask_at_a_stale_version_is_refused_with_the_versions_and_stores_nothing(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(5))
        await ref.ask(Deposit(5))
        with pytest.raises(ConcurrencyError) as refused:
            await ref.ask(Withdraw(1), expected_version=1)
        assert (refused.value.stream_id, refused.value.expected_version) == ("Account-a", 1)
        assert refused.value.actual_version == 2
        assert refused.value.retries is None  # refused, never retried
        assert "is at version 2, expected 1" in str(refused.value)
        assert await ref.state_and_version() == (Account(10, [5, 5]), 2)
    assert await store.stream_version("Account-a") == 2


async def test_an_actor_behind_the_store_reloads_before_it_judges_a_conditional_command(
    store: EventStore,
) -> None:
    async with Runtime(store) as first, Runtime(store) as second:
        behind = second.ref(Account, "x")
        await behind.ask(Deposit(1))  # live in the second runtime at version 1
        await first.ref(Account, "x").ask(Deposit(1))  # the stream is at 2 now
        # the client read version 2 elsewhere: the command is decided, at version 3
        recorded = await behind.ask(Deposit(1), expected_version=2)
        assert [r.version for r in recorded] == [3]
        # a version the stream has not reached: refused after the reload, naming the real one
        with pytest.raises(ConcurrencyError) as refused:
            await behind.ask(Deposit(1), expected_version=9)
        assert (refused.value.expected_version, refused.value.actual_version) == (9, 3)
    assert await store.stream_version("Account-x") == 3


async def test_expected_version_zero_lets_only_the_first_writer_create_the_aggregate(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(5), expected_version=0)
        with pytest.raises(ConcurrencyError) as refused:
            await ref.ask(Deposit(6), expected_version=0)
        assert refused.value.actual_version == 1
    assert await store.stream_version("Account-a") == 1


async def test_conditional_commands_in_one_batch_are_checked_after_the_commands_before_them(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        # the tell is queued for the next loop step, so the asks join its batch
        await ref.tell(Deposit(1))
        outcomes = await asyncio.gather(
            ref.ask(Deposit(2), expected_version=1),  # after the tell's event
            ref.ask(Deposit(3), expected_version=1),  # the one before it moved the stream on
            ref.ask(Deposit(4), expected_version=2),
            return_exceptions=True,
        )
        stored_first, refused, stored_last = outcomes
        assert isinstance(stored_first, list) and stored_first[0].version == 2
        assert isinstance(refused, ConcurrencyError)
        assert (refused.expected_version, refused.actual_version) == (1, 2)
        assert isinstance(stored_last, list) and stored_last[0].version == 3
        assert (await ref.state()).history == [1, 2, 4]
        assert runtime.statistics().commands_processed == 4


async def test_a_conditional_command_that_loses_to_another_writer_is_refused_not_decided_again(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(5))  # the actor now holds version 1
        # another process appends: the actor does not know yet
        other = NewEvent(str(uuid.uuid4()), "Deposited", {"amount": 100}, {})
        await store.append("Account-a", 1, [other])

        with pytest.raises(ConcurrencyError) as refused:
            await ref.ask(Deposit(50), expected_version=1)  # decided, then the append conflicts
        assert (refused.value.expected_version, refused.value.actual_version) == (1, 2)
        assert await store.stream_version("Account-a") == 2

        # the same command without a condition is retried against the reloaded stream
        recorded = await ref.ask(Deposit(50))
        assert recorded[0].version == 3
        assert (await ref.state()).history == [5, 100, 50]


async def test_a_repeated_conditional_command_with_its_id_answers_with_its_first_events(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        first = await ref.ask(Deposit(5), command_id="c-1", expected_version=0)
        # a client retrying after a lost response gets the outcome, not a conflict
        again = await ref.ask(Deposit(5), command_id="c-1", expected_version=0)
        assert again == first
    assert await store.stream_version("Account-a") == 1


@pytest.mark.parametrize(
    ("given", "error", "words"),
    [
        ("1", TypeError, "expected_version must be an int"),
        (True, TypeError, "expected_version must be an int"),
        (1.0, TypeError, "got float 1.0"),
        (-1, ValueError, "expected_version must be >= 0"),
    ],
)
async def test_an_expected_version_that_is_not_a_version_is_refused_before_it_is_sent(
    given: Any, error: type[Exception], words: str
) -> None:
    store = InMemoryEventStore()
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(error, match=words):
            await ref.ask(Deposit(5), expected_version=given)
        assert runtime.statistics().commands_processed == 0
        assert await store.stream_version("Account-a") == 0


async def test_a_refusal_names_the_stream_of_the_aggregate_that_refused(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        with pytest.raises(Rejected) as refused:
            await runtime.ref(Account, "a").ask(Withdraw(1))
        assert refused.value.stream_id == "Account-a"
    assert Rejected("raised elsewhere").stream_id is None


async def test_exists_is_false_until_the_stream_has_an_event(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        assert await ref.exists() is False
        with pytest.raises(Rejected):
            await ref.ask(Withdraw(1))  # refused: still no event
        assert await ref.exists() is False
        await ref.tell(Deposit(1))
        assert await ref.exists() is True  # sees the tell sent before it
        assert runtime.passivate_idle() == 1
        assert await ref.exists() is True  # from the store
    async with Runtime(store) as runtime:
        assert await runtime.ref(Account, "a").exists() is True
        assert await runtime.ref(Account, "b").exists() is False


class _CountingReads:
    """Counts the store's version reads and loads (wrapped on an in-memory store)."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.reads = 0
        original = store.stream_version

        async def stream_version(stream_id: str) -> int:
            self.reads += 1
            return await original(stream_id)

        store.stream_version = stream_version  # type: ignore[method-assign]


async def test_exists_on_a_live_actor_reads_nothing_from_the_store() -> None:
    store = InMemoryEventStore()
    counting = _CountingReads(store)
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(5))
        activations = runtime.statistics().activations
        assert await ref.exists() is True
        assert counting.reads == 0
        assert runtime.statistics().activations == activations


async def test_exists_on_a_cold_aggregate_asks_the_store_without_loading_it() -> None:
    store = InMemoryEventStore()
    counting = _CountingReads(store)
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(5))
        runtime.passivate_idle()
        before = runtime.statistics()
        assert await runtime.ref(Account, "a").exists() is True
        assert await runtime.ref(Account, "b").exists() is False
        assert counting.reads == 2
        after = runtime.statistics()
        assert (after.activations, after.active_actors) == (before.activations, 0)
