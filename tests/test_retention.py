"""Retention: archiving what snapshots cover, and deleting streams (soft and hard)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from actorsource import (
    ActorFailedError,
    ArchivedStream,
    ConcurrencyError,
    EventStore,
    JsonLinesArchiver,
    NewEvent,
    Projection,
    ProjectionContext,
    Rejected,
    Runtime,
    SnapshotEvery,
    StoredEvent,
    StreamArchivedError,
    StreamDeleted,
    StreamDeletedError,
    StreamNotFoundError,
    handle,
    read_archive,
)

from .conftest import make_store
from .domain import Account, Deposit, Deposited, Withdraw

STREAM = "Account-a"


class Recording:
    """An archiver that keeps what it was given (and can refuse, like a full disk)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[StoredEvent]]] = []
        self.fail = fail

    async def __call__(self, stream_id: str, events: Sequence[StoredEvent]) -> str:
        if self.fail:
            raise OSError("no space left on the archive disk")
        self.calls.append((stream_id, list(events)))
        return f"memory:{stream_id}"


async def _deposits(store: EventStore, count: int, aggregate_id: str = "a") -> None:
    """``count`` deposits of 1..count, with a snapshot every 5 (saved when the runtime ends)."""
    async with Runtime(store, snapshot=SnapshotEvery(5)) as runtime:
        ref = runtime.ref(Account, aggregate_id)
        for amount in range(1, count + 1):
            await ref.ask(Deposit(amount))


async def _events(store: EventStore, stream_id: str = STREAM) -> list[StoredEvent]:
    return [event async for event in store.read_stream(stream_id)]


async def _everything(store: EventStore) -> tuple[list[StoredEvent], dict[str, int], object]:
    """What a refused operation must leave as it was."""
    snapshot = await store.load_snapshot(STREAM)
    return [e async for e in store.read_all()], await store.list_checkpoints(), snapshot


# -- archiving ------------------------------------------------------------------------------


async def test_an_archived_stream_rehydrates_to_the_same_state_from_its_snapshot(
    store: EventStore, tmp_path: Path
) -> None:
    await _deposits(store, 12)
    before = await _events(store)
    async with Runtime(store) as runtime:
        state_before = await runtime.state_at(Account, "a", version=12)
        archiver = JsonLinesArchiver(tmp_path / "archive")
        done = await runtime.archive(STREAM, archiver=archiver)
        path = archiver.path_for(STREAM, 1, 10)
        assert done == [ArchivedStream(STREAM, 1, 10, str(path))]

    assert path.name == "Account-a.000000000001-000000000010.jsonl.gz"
    assert list(read_archive(path)) == before[:10]
    with pytest.raises(StreamArchivedError) as raised:
        await _events(store)
    assert (raised.value.stream_id, raised.value.first_kept_version) == (STREAM, 11)
    assert "before version 11 are archived" in str(raised.value)
    assert [e async for e in store.read_stream(STREAM, 11)] == before[10:]
    # read_all skips the archived positions; the others are as they were
    assert [e.position async for e in store.read_all()] == [e.position for e in before[10:]]

    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        assert await ref.state() == state_before
        assert await runtime.state_at(Account, "a", version=11) is not None
        with pytest.raises(StreamArchivedError, match="before version 11 are archived"):
            await runtime.state_at(Account, "a", version=3)  # no snapshot at or before 3
        recorded = await ref.ask(Deposit(100))
    assert recorded[0].version == 13
    assert recorded[0].position == before[-1].position + 1


@attrs.define
class AccountV2(Account):
    """Account with a newer snapshot schema and no upcaster: its old snapshots are ignored."""

    stream_category: ClassVar[str | None] = "Account"
    snapshot_version: ClassVar[int] = 2


async def test_an_archived_stream_whose_snapshot_cannot_be_used_fails_to_load_saying_why(
    store: EventStore,
) -> None:
    await _deposits(store, 6)
    async with Runtime(store) as runtime:
        await runtime.archive(STREAM, archiver=Recording())
    async with Runtime(store) as runtime:
        with pytest.raises(ActorFailedError, match="before version 6 are archived") as raised:
            await runtime.ref(AccountV2, "a").ask(Deposit(1))
    assert isinstance(raised.value.__cause__, StreamArchivedError)
    assert await store.stream_version(STREAM) == 6  # nothing appended


async def test_archiving_never_removes_an_event_a_durable_projection_has_not_handled(
    store: EventStore,
) -> None:
    await _deposits(store, 10)
    before = await _events(store)

    class Slow(Projection):
        durable: ClassVar[bool | None] = True

        def __init__(self) -> None:
            self.gate = anyio.Event()
            self.seen: list[int] = []

        @handle
        async def deposited(self, event: Deposited) -> None:
            if event.amount == 4:
                await self.gate.wait()  # held back at the 4th event
            self.seen.append(event.amount)

    slow = Slow()
    async with Runtime(store) as runtime:
        runtime.add_projection(slow, batch_size=1)
        await runtime.wait_for_projection(Slow, before[2].position)
        archiver = Recording()
        done = await runtime.archive(archiver=archiver)
        assert [(d.first_version, d.last_version) for d in done] == [(1, 3)]
        assert [e.version for e in archiver.calls[0][1]] == [1, 2, 3]
        assert [e.version for e in await _events_from(store, 4)] == list(range(4, 11))

        # nothing more may leave while it is held: named, refused, and nothing changes
        with pytest.raises(ValueError, match="'Slow' has handled only up to position"):
            await runtime.archive(STREAM, archiver=archiver, through_version=10 - 1)
        assert len(archiver.calls) == 1

        slow.gate.set()
        await runtime.wait_for_projection(Slow)
        done = await runtime.archive(archiver=archiver)
    assert [(d.first_version, d.last_version) for d in done] == [(4, 10 - 1)]
    assert slow.seen == list(range(1, 11))
    assert [e.version for e in await _events_from(store, 10)] == [10]


async def test_a_durable_projection_holds_archiving_back_before_its_first_checkpoint(
    store: EventStore,
) -> None:
    await _deposits(store, 10)

    class New(Projection):
        durable: ClassVar[bool | None] = True

        def __init__(self) -> None:
            self.entered = anyio.Event()
            self.gate = anyio.Event()
            self.seen: list[int] = []

        @handle
        async def deposited(self, event: Deposited) -> None:
            self.entered.set()
            await self.gate.wait()  # held at its first event: no checkpoint stored yet
            self.seen.append(event.amount)

    new = New()
    async with Runtime(store) as runtime:
        runtime.add_projection(new, batch_size=1)
        await new.entered.wait()
        assert await store.list_checkpoints() == {}
        archiver = Recording()
        assert await runtime.archive(archiver=archiver) == []
        assert archiver.calls == []
        new.gate.set()
        await runtime.wait_for_projection(New)
        done = await runtime.archive(archiver=archiver)
    assert new.seen == list(range(1, 11))  # every event, none archived before it was handled
    assert [(d.first_version, d.last_version) for d in done] == [(1, 9)]


async def _events_from(store: EventStore, version: int) -> list[StoredEvent]:
    return [event async for event in store.read_stream(STREAM, version)]


async def test_a_live_in_memory_projection_and_subscription_hold_archiving_back(
    store: EventStore,
) -> None:
    await _deposits(store, 10)
    before = await _events(store)

    class Stuck(Projection):
        def __init__(self) -> None:
            self.gate = anyio.Event()

        @handle
        async def deposited(self, event: Deposited) -> None:
            if event.amount == 3:
                await self.gate.wait()

    stuck = Stuck()
    async with Runtime(store) as runtime:
        runtime.add_projection(stuck, batch_size=1)
        await runtime.wait_for_projection(Stuck, before[1].position)
        done = await runtime.archive(archiver=Recording())
        assert [(d.first_version, d.last_version) for d in done] == [(1, 2)]
        stuck.gate.set()
        await runtime.wait_for_projection(Stuck)

        # a subscription that has yielded only up to version 5 holds it there
        subscription = runtime.subscribe(aggregates=[Account], from_position=before[2].position)
        seen = [await anext(subscription) for _ in range(3)]
        assert [r.version for r in seen] == [3, 4, 5]
        # version 5 is handled once the subscriber asks for the next one
        done = await runtime.archive(archiver=Recording())
        assert [(d.first_version, d.last_version) for d in done] == [(3, 4)]
        await subscription.aclose()
        done = await runtime.archive(archiver=Recording())
    assert [(d.first_version, d.last_version) for d in done] == [(5, 9)]


async def test_archive_refuses_bad_input_with_a_clear_error_and_changes_nothing(
    store: EventStore,
) -> None:
    await _deposits(store, 7)  # its snapshot is at version 5
    await store.save_checkpoint("reader", 1000)
    before = await _everything(store)
    archiver = Recording()
    async with Runtime(store) as runtime:
        with pytest.raises(StreamNotFoundError, match="'Account-nobody': it has no events"):
            await runtime.archive("Account-nobody", archiver=archiver)
        with pytest.raises(ValueError, match="latest snapshot is at version 5"):
            await runtime.archive(STREAM, archiver=archiver, through_version=6)
        with pytest.raises(ValueError, match="its last event is always kept"):
            await runtime.archive(STREAM, archiver=archiver, through_version=7)
        with pytest.raises(ValueError, match="through_version must be an int >= 1"):
            await runtime.archive(STREAM, archiver=archiver, through_version=0)
        with pytest.raises(ValueError, match="stream= or category="):
            await runtime.archive(STREAM, category="Account", archiver=archiver)
        # an archiver that fails: nothing is removed
        with pytest.raises(OSError, match="no space left"):
            await runtime.archive(STREAM, archiver=Recording(fail=True))
        assert archiver.calls == []
        assert await _everything(store) == before

        await runtime.delete_stream(STREAM)
        deleted = await _everything(store)
        with pytest.raises(StreamDeletedError, match="'Account-a' was deleted"):
            await runtime.archive(STREAM, archiver=archiver)
        assert await runtime.archive(archiver=archiver) == []  # deleted streams are skipped
    assert archiver.calls == []
    assert await _everything(store) == deleted


async def test_the_store_refuses_archiving_past_the_snapshot_or_a_checkpoint_in_its_transaction(
    store: EventStore,
) -> None:
    await _deposits(store, 7)
    archive = store.capabilities().archive_stream
    assert archive is not None
    await store.save_checkpoint("behind", 2)
    before = await _everything(store)
    with pytest.raises(ValueError, match="checkpoint 'behind' has handled only up to position 2"):
        await archive(STREAM, 5, None)
    with pytest.raises(ValueError, match=r"a reader of this runtime .* up to position 1"):
        await archive(STREAM, 2, 1)
    with pytest.raises(ValueError, match="latest snapshot is at version 5"):
        await archive(STREAM, 6, None)
    with pytest.raises(StreamNotFoundError):
        await archive("Account-nobody", 1, None)
    assert await _everything(store) == before
    assert await archive(STREAM, 2, None) == 2
    assert await archive(STREAM, 1, None) == 0  # archived already


# -- deleting streams ---------------------------------------------------------------------------


class Deletions(Projection):
    def __init__(self) -> None:
        self.deleted: list[tuple[str, bool, int]] = []
        self.deposits = 0

    @handle
    def deposited(self, event: Deposited) -> None:
        self.deposits += 1

    @handle
    def stream_deleted(self, event: StreamDeleted, ctx: ProjectionContext) -> None:
        self.deleted.append((event.stream_id, event.hard, ctx.record.version))


class InlineDeletions(Deletions):
    mode: ClassVar[Any] = "inline"


async def test_an_inline_projection_handles_a_tombstone_in_its_deletion_s_transaction(
    store: EventStore, store_kind: str
) -> None:
    inline = InlineDeletions()
    async with Runtime(store) as runtime:
        runtime.add_projection(inline)
        await runtime.ref(Account, "a").ask(Deposit(1))
        await runtime.delete_stream(STREAM, hard=True)
        if store_kind == "sqlite":
            # the deletion commits on a connection of its own: the next append feeds it
            assert inline.deleted == []
            await runtime.ref(Account, "b").ask(Deposit(1))
        assert inline.deleted == [(STREAM, True, 2)]
        assert inline.deposits == 2 if store_kind == "sqlite" else 1


async def test_a_soft_deleted_stream_keeps_its_events_and_refuses_commands(
    store: EventStore,
) -> None:
    await _deposits(store, 3)
    before = await _events(store)
    deletions = Deletions()
    async with Runtime(store) as runtime:
        runtime.add_projection(deletions)
        ref = runtime.ref(Account, "a")
        assert (await ref.state()).balance == 6  # live in this runtime
        result = await runtime.delete_stream(STREAM)
        assert result.version == 4
        with pytest.raises(StreamDeletedError, match=r"deleted \(its events kept\) at version 4"):
            await ref.ask(Deposit(1))
        with pytest.raises(StreamDeletedError) as raised:
            await ref.ask(Deposit(1))
        assert (raised.value.stream_id, raised.value.hard, raised.value.version) == (
            STREAM,
            False,
            4,
        )
        assert (await runtime.state_at(Account, "a", version=3)).balance == 6
        await runtime.wait_for_projection(Deletions)
    events = await _events(store)
    assert events[:3] == before
    assert [(e.type, e.data) for e in events[3:]] == [
        ("$StreamDeleted", {"stream_id": STREAM, "hard": False})
    ]
    assert deletions.deleted == [(STREAM, False, 4)]
    assert deletions.deposits == 3


async def test_a_hard_deleted_stream_keeps_only_its_tombstone_and_its_id_is_not_reused(
    store: EventStore,
) -> None:
    await _deposits(store, 6)  # a snapshot at version 5
    await _deposits(store, 2, "b")
    deletions = Deletions()
    async with Runtime(store) as runtime:
        runtime.add_projection(deletions)
        result = await runtime.delete_stream(STREAM, hard=True)
        with pytest.raises(StreamDeletedError, match="hard-deleted"):
            await runtime.ref(Account, "a").ask(Deposit(1))
        assert (await runtime.ref(Account, "b").state()).balance == 3
        await runtime.wait_for_projection(Deletions)
    assert await store.load_snapshot(STREAM) is None
    assert await store.stream_version(STREAM) == 7
    assert [(e.version, e.type) async for e in store.read_stream(STREAM, 7)] == [
        (7, "$StreamDeleted")
    ]
    with pytest.raises(StreamDeletedError, match="hard-deleted"):
        await _events(store)
    assert [e.stream_id async for e in store.read_all()] == [
        "Account-b",
        "Account-b",
        STREAM,
    ]
    assert result.first_position == 9
    assert deletions.deleted == [(STREAM, True, 7)]


async def test_a_runtime_that_had_the_stream_live_refuses_its_next_command_and_appends_nothing(
    store: EventStore,
) -> None:
    async with Runtime(store) as first, Runtime(store) as second:
        ref = first.ref(Account, "a")
        await ref.ask(Deposit(5))
        assert (await ref.state()).balance == 5  # live in the first runtime
        await second.delete_stream(STREAM)
        with pytest.raises(StreamDeletedError, match="'Account-a' was deleted"):
            await ref.ask(Deposit(1))
        with pytest.raises(StreamDeletedError):
            await ref.ask(Deposit(1))
    assert [e.type for e in await _events(store)] == ["Deposited", "$StreamDeleted"]


async def test_an_append_that_expects_an_archived_version_is_a_conflict_and_stores_nothing(
    store: EventStore,
) -> None:
    await _deposits(store, 10)  # a snapshot at version 10
    async with Runtime(store) as runtime:
        await runtime.archive(STREAM, archiver=Recording(), through_version=9)
    before = await _everything(store)
    # the versions these would take were removed, not freed: no unique index collides
    for expected in (0, 3):
        with pytest.raises(ConcurrencyError) as raised:
            await store.append(STREAM, expected, [_new_event()])
        assert (raised.value.expected_version, raised.value.actual_version) == (expected, 10)
    assert await _everything(store) == before


def _new_event() -> NewEvent:
    return NewEvent(str(uuid.uuid4()), "Deposited", {"amount": 1}, {})


def _second(store: EventStore, kind: str, tmp_path: Path) -> EventStore:
    """Another store on ``store``'s database, as another process has (the memory store: itself)."""
    return store if kind == "memory" else make_store(kind, tmp_path)


async def test_a_stale_actor_of_another_runtime_cannot_take_an_archived_version_again(
    store: EventStore, store_kind: str, tmp_path: Path
) -> None:
    other = _second(store, store_kind, tmp_path)
    async with Runtime(store) as first, Runtime(other) as second:
        stale = first.ref(Account, "a")
        await stale.ask(Deposit(100))  # live in the first runtime at version 1
        moving = second.ref(Account, "a")
        await moving.ask(Withdraw(100))  # version 2: balance 0
        await moving.ask(Deposit(1))
        await moving.snapshot()  # at version 3
        await moving.ask(Deposit(1))  # version 4: balance 2
        await second.archive(STREAM, archiver=Recording(), through_version=3)
        # the first runtime's actor still holds balance 100 at version 1: its append of
        # version 2 (archived) is a conflict, and decided again on the reloaded state
        with pytest.raises(Rejected, match="balance 2"):
            await stale.ask(Withdraw(100))
    assert [(e.version, e.type) async for e in store.read_stream(STREAM, 4)] == [(4, "Deposited")]


async def test_a_stale_actor_of_another_runtime_meets_the_tombstone_of_a_hard_delete(
    store: EventStore, store_kind: str, tmp_path: Path
) -> None:
    other = _second(store, store_kind, tmp_path)
    async with Runtime(store) as first, Runtime(other) as second:
        stale = first.ref(Account, "a")
        await stale.ask(Deposit(100))  # live in the first runtime at version 1
        await second.ref(Account, "a").ask(Deposit(5))  # version 2
        await second.delete_stream(STREAM, hard=True)  # the tombstone at 3; 1 and 2 removed
        with pytest.raises(StreamDeletedError, match="hard-deleted"):
            await stale.ask(Withdraw(100))
    assert await store.stream_version(STREAM) == 3
    assert [(e.version, e.type) async for e in store.read_stream(STREAM, 3)] == [
        (3, "$StreamDeleted")
    ]


async def test_delete_refuses_bad_input_with_a_clear_error_and_changes_nothing(
    store: EventStore,
) -> None:
    await _deposits(store, 2)
    async with Runtime(store) as runtime:
        before = await _everything(store)
        with pytest.raises(StreamNotFoundError, match="cannot delete stream 'Account-nobody'"):
            await runtime.delete_stream("Account-nobody")
        with pytest.raises(ValueError, match="a stream id must be a non-empty str"):
            await runtime.delete_stream("")
        assert await _everything(store) == before

        await runtime.delete_stream(STREAM)
        soft = await _everything(store)
        with pytest.raises(StreamDeletedError, match="was deleted"):
            await runtime.delete_stream(STREAM)
        assert await _everything(store) == soft

        # a soft-deleted stream may still be hard-deleted, once
        await runtime.delete_stream(STREAM, hard=True)
        hard = await _everything(store)
        for again in (False, True):
            with pytest.raises(StreamDeletedError, match="hard-deleted"):
                await runtime.delete_stream(STREAM, hard=again)
        assert await _everything(store) == hard
    assert [e.type for e in hard[0]] == ["$StreamDeleted"]


async def test_the_archive_files_read_back_and_name_the_stream_safely(tmp_path: Path) -> None:
    archiver = JsonLinesArchiver(tmp_path / "new" / "dir")
    assert archiver.path_for("Order/7 ü", 3, 12).name == (
        "Order%2F7%20%C3%BC.000000000003-000000000012.jsonl.gz"
    )
