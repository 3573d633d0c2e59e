"""Rehydration on its own: snapshot first, then the tail, page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator

from actorsource import SnapshotRecord
from actorsource._aggregate import decider_of
from actorsource._codec import Codec
from actorsource._records import JSONDict
from actorsource._rehydration import Rehydration

from .domain import Account


def rehydration() -> Rehydration:
    decider = decider_of(Account)
    codec = Codec()
    codec.register_events(decider.event_types)
    return Rehydration(decider, codec, "Account-a")


def deposits(first: int, last: int) -> list[tuple[int, str, JSONDict]]:
    return [(v, "Deposited", {"amount": v}) for v in range(first, last + 1)]


async def test_the_tail_after_a_snapshot_is_read_from_the_version_after_it() -> None:
    asked: list[int] = []

    async def read_from(after: int) -> AsyncIterator[tuple[int, str, JSONDict]]:
        asked.append(after)
        for item in deposits(after, 2503):
            yield item

    rebuilding = rehydration()
    snapshot = SnapshotRecord(
        "Account-a", 3, rebuilding.codec.encode_state(Account(6, [1, 2, 3])), 1
    )
    state, version, start = await rebuilding.rehydrate((snapshot, deposits(4, 5), False), read_from)
    assert asked == [6]  # after the snapshot and the first page
    assert (version, start) == (2503, 3)
    assert state.history == list(range(1, 2504))  # pages of 1000 and the rest, in order


async def test_a_complete_first_page_reads_nothing_more() -> None:
    async def read_from(after: int) -> AsyncIterator[tuple[int, str, JSONDict]]:
        raise AssertionError("nothing more to read")
        yield  # pragma: no cover

    state, version, start = await rehydration().rehydrate((None, deposits(1, 2), True), read_from)
    assert (state.balance, version, start) == (3, 2, 0)


async def test_an_unusable_snapshot_replays_the_whole_stream() -> None:
    async def read_from(after: int) -> AsyncIterator[tuple[int, str, JSONDict]]:
        for item in deposits(after, 3):
            yield item

    newer = SnapshotRecord("Account-a", 2, {"state": {"balance": 3, "history": [1, 2]}}, 99)
    state, version, start = await rehydration().rehydrate((newer, deposits(3, 3), False), read_from)
    assert (state.history, version, start) == ([1, 2, 3], 3, 0)
