"""Idempotent commands: a command id processed once is answered with its original events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from actorsource import (
    AppendResult,
    Backoff,
    CodecError,
    EventStore,
    InMemoryEventStore,
    NewEvent,
    Rejected,
    Runtime,
    SnapshotRecord,
    StoredEvent,
    StoreError,
)

from .clock import ManualClock
from .conftest import make_store
from .domain import Account, Deposit, Deposited, Noop, Withdraw
from .faults import FaultyStore


async def stream(store: EventStore, stream_id: str = "Account-a") -> list[StoredEvent]:
    return [e async for e in store.read_stream(stream_id)]


def reopened(store: EventStore, kind: str, tmp_path: Path) -> EventStore:
    """The same data in a new, unopened store object: what a restarted process opens."""
    if kind in ("sqlite", "postgres"):  # the same file, or the same schema
        return make_store(kind, tmp_path)
    assert isinstance(store, InMemoryEventStore)
    fresh = InMemoryEventStore()  # memory stores cannot reopen: hand the data over
    fresh.__dict__.update({k: v for k, v in store.__dict__.items() if k != "_state"})
    return fresh


class LostReplies(FaultyStore):
    """The next ``lose`` appends commit, and then their reply is lost (a crash, a cut
    connection): the caller gets an error although the events are stored."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.lose = 0

    async def append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> AppendResult:
        result = await super().append(stream_id, expected_version, events)
        if self.lose:
            self.lose -= 1
            raise OSError("injected: the connection was lost after the commit")
        return result


# -- the original result, without deciding again ----------------------------------------------


async def test_a_repeated_command_id_returns_the_original_events_and_decides_nothing(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        original = await ref.ask(Deposit(5), command_id="pay-1", metadata={"user_id": "u-1"})
        again = await ref.ask(Deposit(5), command_id="pay-1")
        # the id names the command: another payload under the same id is the same command
        other_payload = await ref.ask(Deposit(99), command_id="pay-1")
        assert (await ref.state()).balance == 5
    assert again == other_payload == original
    assert original[0].metadata["command_id"] == "pay-1"
    assert original[0].metadata["user_id"] == "u-1"
    assert [e.event_id for e in await stream(store)] == [original[0].event_id]


async def test_a_command_with_several_events_gets_all_of_them_back(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))
        original = await ref.ask(Deposit(2), command_id="c-1") + await ref.ask(
            Withdraw(1), command_id="c-2"
        )
        repeated = await ref.ask(Withdraw(1), command_id="c-2")
    assert repeated == original[1:]
    assert [(r.version, r.position) for r in original] == [(2, 2), (3, 3)]


async def test_commands_without_an_id_are_never_looked_up_and_allocate_no_window(
    store: EventStore,
) -> None:
    counting = FaultyStore(store)
    async with Runtime(counting) as runtime:
        ref = runtime.ref(Account, "a")
        for amount in range(1, 6):
            await ref.ask(Deposit(amount))
            ref.tell_nowait(Deposit(amount))
        await ref.state()
        assert counting.command_lookups == []
        # the W4 memory budget: no window
        assert runtime._dispatcher._actors["Account-a"].recent is None
        await ref.ask(Deposit(1), command_id="c-1")
        assert counting.command_lookups == [["c-1"]]  # a new id: looked up once
        await ref.ask(Deposit(1), command_id="c-1")
        assert counting.command_lookups == [["c-1"]]  # a repeat in the window: not again
        assert runtime._dispatcher._actors["Account-a"].recent is not None


async def test_the_same_id_twice_in_one_batch_is_decided_once(store: EventStore) -> None:
    results: list[Any] = []
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")

        async def ask() -> None:
            results.append(await ref.ask(Deposit(3), command_id="twice"))

        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(ask)  # sent in one loop step: one batch
            tg.start_soon(ref.ask, Deposit(4))
        assert (await ref.state()).balance == 7
    first, second = results
    assert first == second
    assert [e.data["amount"] for e in await stream(store)] == [3, 4]


async def test_a_told_command_with_a_known_id_is_not_applied_again(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        ref.tell_nowait(Deposit(3), command_id="t-1")
        await ref.tell(Deposit(3), command_id="t-1")
        ref.tell_nowait(Deposit(3), command_id="t-1")
        assert (await ref.state()).balance == 3
    assert len(await stream(store)) == 1


async def test_a_command_id_belongs_to_its_aggregate(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        [a] = await runtime.ref(Account, "a").ask(Deposit(1), command_id="same")
        [b] = await runtime.ref(Account, "b").ask(Deposit(1), command_id="same")
    assert (a.stream_id, b.stream_id) == ("Account-a", "Account-b")
    assert a.event_id != b.event_id


# -- what stored nothing is decided again -------------------------------------------------------


async def test_a_rejected_command_is_decided_again_when_retried(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(Rejected, match="insufficient funds"):
            await ref.ask(Withdraw(4), command_id="w-1")
        await ref.ask(Deposit(10))
        [withdrew] = await ref.ask(Withdraw(4), command_id="w-1")  # decided again: accepted
        assert await ref.ask(Withdraw(4), command_id="w-1") == [withdrew]  # now it stands
        assert await ref.ask(Noop(), command_id="n-1") == []
        assert (await ref.state()).balance == 6
    assert [e.type for e in await stream(store)] == ["Deposited", "Withdrew"]


# -- after passivation, a restart, or another runtime -------------------------------------------


async def test_a_repeated_command_id_after_passivation_returns_the_original_events(
    store: EventStore,
) -> None:
    counting = FaultyStore(store)
    async with Runtime(counting) as runtime:
        ref = runtime.ref(Account, "a")
        original = await ref.ask(Deposit(5), command_id="pay-1")
        assert runtime.passivate_idle() == 1
        assert await ref.ask(Deposit(5), command_id="pay-1") == original  # found in the store
        assert counting.command_lookups == [["pay-1"], ["pay-1"]]
        assert (await ref.state()).balance == 5
    assert len(await stream(store)) == 1


async def test_a_repeated_command_id_after_a_restart_returns_the_original_events(
    store_kind: str, tmp_path: Path
) -> None:
    first = make_store(store_kind, tmp_path)
    async with Runtime(first) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))
        original = await ref.ask(Deposit(5), command_id="pay-1", metadata={"user_id": "u"})
    async with Runtime(reopened(first, store_kind, tmp_path)) as runtime:
        ref = runtime.ref(Account, "a")
        assert await ref.ask(Deposit(5), command_id="pay-1") == original
        assert (await ref.state()).balance == 6
        stored = await stream(runtime.store)
    assert [e.version for e in stored] == [1, 2]


#: commands a store must find again exactly: (command id, the caller's metadata)
AWKWARD_COMMANDS = {
    "metadata holding NUL": ("pay-1", {"note": "a\x00b"}),
    "NUL in a metadata key": ("pay-1", {"n\x00te": "x"}),
    "control characters in the id": ("c-\x01\x1f\x7f-\u2028", {}),
    "quotes, backslashes, a JSON path": ('it\'s "q" \\ $.command_id', {}),
    "unicode beyond the BMP": ("zahlung-Ä-日本-🚀", {"note": "🚀"}),
}


@pytest.mark.parametrize(
    ("command_id", "metadata"), AWKWARD_COMMANDS.values(), ids=AWKWARD_COMMANDS.keys()
)
async def test_a_command_with_awkward_text_is_not_applied_again_after_a_restart(
    store_kind: str, tmp_path: Path, command_id: str, metadata: dict[str, Any]
) -> None:
    first = make_store(store_kind, tmp_path)
    async with Runtime(first) as runtime:
        original = await runtime.ref(Account, "a").ask(
            Deposit(5), command_id=command_id, metadata=metadata
        )
    async with Runtime(reopened(first, store_kind, tmp_path)) as runtime:
        ref = runtime.ref(Account, "a")
        assert await ref.ask(Deposit(5), command_id=command_id, metadata=metadata) == original
        assert (await ref.state()).balance == 5
        found = await runtime.store.find_command_events("Account-a", [command_id])
        stored = await stream(runtime.store)
    assert [e.event_id for e in stored] == [e.event_id for e in found] == [original[0].event_id]
    assert stored[0].metadata == {**original[0].metadata, **metadata}


async def test_a_command_id_holding_nul_is_refused_by_name_and_stores_nothing(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(ValueError, match=r"command_id must not hold NUL.*'pay\\x001'"):
            await ref.ask(Deposit(5), command_id="pay\x001")
        with pytest.raises(ValueError, match="command_id must not hold NUL"):
            await ref.tell(Deposit(5), command_id="pay\x001")
        with pytest.raises(ValueError, match="command_id must not hold NUL"):
            ref.tell_nowait(Deposit(5), command_id="pay\x001")
        assert (await ref.state()).balance == 0
    with pytest.raises(ValueError, match="without NUL"):
        await store.find_command_events("Account-a", ["pay\x001"])
    assert await stream(store) == []


async def test_a_command_another_runtime_processed_is_not_applied_again(
    store: EventStore,
) -> None:
    async with Runtime(store) as here, Runtime(store) as there:
        await here.ref(Account, "a").ask(Deposit(1))  # here's actor is loaded, at version 1
        original = await there.ref(Account, "a").ask(Deposit(5), command_id="pay-1")
        assert await here.ref(Account, "a").ask(Deposit(5), command_id="pay-1") == original
        assert (await here.ref(Account, "a").state()).balance == 1  # stale, as without ids
    assert len(await stream(store)) == 2


@pytest.mark.parametrize("window", [0, 2])
async def test_ids_beyond_the_window_are_found_in_the_store(store: EventStore, window: int) -> None:
    counting = FaultyStore(store)
    async with Runtime(counting, idempotency_window=window) as runtime:
        ref = runtime.ref(Account, "a")
        originals = [await ref.ask(Deposit(n), command_id=f"c-{n}") for n in range(1, 5)]
        remembered = runtime._dispatcher._actors["Account-a"].recent
        assert (len(remembered) if remembered is not None else 0) == window
        counting.command_lookups.clear()
        for n in (4, 1):
            assert await ref.ask(Deposit(n), command_id=f"c-{n}") == originals[n - 1]
        # c-4 is in a window of 2; c-1 fell out of it (and with no window both are read)
        assert counting.command_lookups == ([["c-1"]] if window else [["c-4"], ["c-1"]])
        assert (await ref.state()).balance == 10


async def test_a_failed_lookup_fails_only_the_commands_with_ids(store: EventStore) -> None:
    faulty = FaultyStore(store)
    async with Runtime(faulty) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))
        faulty.fail_reads = 1
        async with anyio.create_task_group() as tg:
            outcomes: dict[str, Any] = {}

            async def ask(name: str, command_id: str | None) -> None:
                try:
                    outcomes[name] = await ref.ask(Deposit(2), command_id=command_id)
                except StoreError as exc:
                    outcomes[name] = exc

            tg.start_soon(ask, "with id", "c-1")
            tg.start_soon(ask, "without", None)
        assert isinstance(outcomes["with id"], StoreError)
        assert "looking up command 'c-1'" in str(outcomes["with id"])
        assert outcomes["without"][0].version == 2
        [retried] = await ref.ask(Deposit(2), command_id="c-1")  # not processed: decided now
        assert retried.version == 3


# -- a crash between the commit and the reply -----------------------------------------------------


async def test_a_retried_command_after_a_crash_between_commit_and_reply_does_not_double_apply(
    store_kind: str, tmp_path: Path
) -> None:
    first = make_store(store_kind, tmp_path)
    async with first:
        lossy = LostReplies(first)
        async with Runtime(lossy) as runtime:
            ref = runtime.ref(Account, "a")
            await ref.ask(Deposit(1))
            lossy.lose = 1
            with pytest.raises(StoreError, match="connection was lost after the commit"):
                await ref.ask(Deposit(5), command_id="pay-1")
        [_, committed] = await stream(first)  # the events are stored; the caller never knew
    # the process restarts and the caller retries with the same id
    async with Runtime(reopened(first, store_kind, tmp_path)) as runtime:
        [recorded] = await runtime.ref(Account, "a").ask(Deposit(5), command_id="pay-1")
        assert (await runtime.ref(Account, "a").state()).balance == 6
        stored = await stream(runtime.store)
    assert stored == [stored[0], committed]  # once
    assert recorded.event == Deposited(5)
    assert (recorded.event_id, recorded.version, recorded.position) == (
        committed.event_id,
        committed.version,
        committed.position,
    )
    assert (recorded.recorded_at, recorded.metadata) == (committed.recorded_at, committed.metadata)


async def test_a_retry_in_the_same_runtime_after_a_lost_reply_gets_the_original_events(
    store: EventStore,
) -> None:
    lossy = LostReplies(store)
    clock = ManualClock()
    async with Runtime(lossy, supervision=Backoff(base=0.05, clock=clock)) as runtime:
        ref = runtime.ref(Account, "a")
        lossy.lose = 1
        with pytest.raises(StoreError):
            await ref.ask(Deposit(5), command_id="pay-1")
        clock.advance(0.05)  # the backoff after a failed append (50 ms) has passed
        [recorded] = await ref.ask(Deposit(5), command_id="pay-1")
        assert (await ref.state()).balance == 5
    [committed] = await stream(store)
    assert (recorded.event_id, recorded.version) == (committed.event_id, 1)


async def test_a_command_another_writer_stored_meanwhile_is_found_after_the_conflict(
    store: EventStore,
) -> None:
    class Racing(FaultyStore):
        """The first append loses the race to a writer storing the same command."""

        async def append(
            self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
        ) -> AppendResult:
            if self.appends == 0:
                metadata = {**events[0].metadata}
                await self.inner.append(
                    stream_id,
                    expected_version,
                    [NewEvent("theirs", "Deposited", {"amount": 5}, metadata)],
                )
            return await super().append(stream_id, expected_version, events)

    racing = Racing(store)
    async with Runtime(racing) as runtime:
        ref = runtime.ref(Account, "a")
        [recorded] = await ref.ask(Deposit(5), command_id="pay-1")
        assert runtime.statistics().conflicts_retried == 1
        assert racing.command_lookups == [["pay-1"], ["pay-1"]]  # before, and after the conflict
        assert (await ref.state()).balance == 5
    assert recorded.event_id == "theirs"
    assert [e.event_id for e in await stream(store)] == ["theirs"]


async def test_a_found_command_whose_events_no_longer_decode_gets_the_codec_error(
    store: EventStore,
) -> None:
    metadata = {"command_id": "old-1"}
    await store.append("Account-a", 0, [NewEvent("e-1", "Deposited", {"amount": "x"}, metadata)])
    # the actor loads from a snapshot after it; only the lookup decodes the event
    await store.save_snapshot(SnapshotRecord("Account-a", 1, {"state": {"balance": 3}}))
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        with pytest.raises(CodecError, match="Deposited"):
            await ref.ask(Deposit(1), command_id="old-1")
    assert len(await stream(store)) == 1
