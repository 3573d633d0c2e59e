"""A store wrapper that fails chosen operations: fault injection at the store boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from types import TracebackType
from typing import Self

from actorsource import (
    AppendResult,
    EventStore,
    NewEvent,
    SnapshotRecord,
    StoredEvent,
)
from actorsource.stores._base import StoreCapabilities


class FaultyStore:
    """Delegates to a real store; ``fail_appends``/``fail_reads`` make the next N calls raise."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.fail_appends = 0
        self.fail_reads = 0
        self.fail_snapshot_loads = 0
        self.error: Callable[[], Exception] = lambda: OSError("injected: disk full")
        self.appends = 0
        self.snapshot_loads = 0
        #: command ids looked up, one list per find_command_events call
        self.command_lookups: list[list[str]] = []

    @property
    def is_open(self) -> bool:
        return self.inner.is_open

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> AppendResult:
        self.appends += 1
        if self.fail_appends:
            self.fail_appends -= 1
            raise self.error()
        return await self.inner.append(stream_id, expected_version, events)

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> AsyncIterator[StoredEvent]:
        if self.fail_reads:
            self.fail_reads -= 1
            raise self.error()
        async for event in self.inner.read_stream(stream_id, from_version, to_version):
            yield event

    def read_all(self, from_position: int = 1) -> AsyncIterator[StoredEvent]:
        return self.inner.read_all(from_position)

    async def find_command_events(
        self, stream_id: str, command_ids: Collection[str]
    ) -> list[StoredEvent]:
        self.command_lookups.append(sorted(command_ids))
        if self.fail_reads:
            self.fail_reads -= 1
            raise self.error()
        return await self.inner.find_command_events(stream_id, command_ids)

    async def stream_version(self, stream_id: str) -> int:
        return await self.inner.stream_version(stream_id)

    async def load_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> SnapshotRecord | None:
        self.snapshot_loads += 1
        if self.fail_snapshot_loads:
            self.fail_snapshot_loads -= 1
            raise self.error()
        return await self.inner.load_snapshot(stream_id, max_version)

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        await self.inner.save_snapshot(snapshot)

    def capabilities(self) -> StoreCapabilities:
        return StoreCapabilities()  # every call goes through the core methods above
