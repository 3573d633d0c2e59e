"""The in-memory store's cluster tables (a part of :class:`InMemoryEventStore`): several
runtimes in one process sharing one store form a cluster, for fast deterministic tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from .._errors import ActorsourceError, FencedError
from .._records import AppendResult, NewEvent
from .._timers import TimerChange
from ._base import (
    Fence,
    MemberRecord,
    ShardLease,
    StoreLifecycle,
    check_append,
    check_cluster_name,
)


class MemoryCluster(StoreLifecycle):
    """Members, shard counts and shard leases in dicts: every operation is one step of the
    loop, as one transaction would be."""

    #: (cluster, member id) -> the member's last heartbeat
    _members: dict[tuple[str, str], MemberRecord]
    #: cluster -> its shard count
    _shard_counts: dict[str, int]
    #: (cluster, shard) -> its lease
    _leases: dict[tuple[str, int], ShardLease]

    def _append_now(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> AppendResult:
        raise NotImplementedError

    async def _append_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
        fence: Fence | None,
    ) -> AppendResult:
        raise NotImplementedError

    async def heartbeat(
        self, cluster: str, member_id: str, address: str, expires_at: float
    ) -> None:
        """Record that the member lives (at ``address``) until ``expires_at``."""
        self._check_open()
        check_cluster_name(cluster)
        check_cluster_name(member_id)
        self._members[cluster, member_id] = MemberRecord(member_id, address, expires_at)

    async def leave(self, cluster: str, member_id: str) -> None:
        """Remove the member."""
        self._check_open()
        self._members.pop((cluster, member_id), None)

    async def live_members(self, cluster: str, now: float) -> list[MemberRecord]:
        """Return the members whose heartbeat has not expired at ``now``, by id."""
        self._check_open()
        found = [m for (c, _), m in self._members.items() if c == cluster and m.expires_at > now]
        return sorted(found, key=lambda m: m.member_id)

    async def record_shard_count(self, cluster: str, shards: int) -> int:
        """Record the cluster's shard count if none is recorded; return the recorded one."""
        self._check_open()
        check_cluster_name(cluster)
        return self._shard_counts.setdefault(cluster, shards)

    async def shard_leases(self, cluster: str) -> list[ShardLease]:
        """Return every shard lease of the cluster, by shard."""
        self._check_open()
        return sorted(
            (lease for (c, _), lease in self._leases.items() if c == cluster),
            key=lambda lease: lease.shard,
        )

    async def acquire_shards(
        self, cluster: str, member_id: str, shards: Sequence[int], now: float, expires_at: float
    ) -> list[ShardLease]:
        """Take each free or expired shard of ``shards`` with its epoch raised by one."""
        self._check_open()
        check_cluster_name(member_id)
        taken: list[ShardLease] = []
        for shard in shards:
            lease = self._leases.get((cluster, shard))
            if lease is not None and lease.owner is not None and lease.expires_at > now:
                continue
            epoch = 1 if lease is None else lease.epoch + 1
            self._leases[cluster, shard] = new = ShardLease(shard, member_id, epoch, expires_at)
            taken.append(new)
        return taken

    async def renew_shards(
        self, cluster: str, member_id: str, epochs: Mapping[int, int], expires_at: float
    ) -> list[int]:
        """Extend this member's leases still at their epochs; return the shards renewed."""
        self._check_open()
        renewed: list[int] = []
        for shard, epoch in epochs.items():
            lease = self._leases.get((cluster, shard))
            if lease is not None and lease.owner == member_id and lease.epoch == epoch:
                self._leases[cluster, shard] = ShardLease(shard, member_id, epoch, expires_at)
                renewed.append(shard)
        return sorted(renewed)

    async def release_shards(
        self, cluster: str, member_id: str, epochs: Mapping[int, int]
    ) -> list[int]:
        """Release this member's leases still at their epochs; return the shards released."""
        self._check_open()
        released: list[int] = []
        for shard, epoch in epochs.items():
            lease = self._leases.get((cluster, shard))
            if lease is not None and lease.owner == member_id and lease.epoch == epoch:
                self._leases[cluster, shard] = ShardLease(shard, None, epoch, 0.0)
                released.append(shard)
        return sorted(released)

    async def append_fenced_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
        fence: Fence,
    ) -> AppendResult:
        """Append events and apply timer writes in one step if the shard's lease is still at
        the fence's epoch; else raise :class:`FencedError`, storing nothing."""
        return await self._append_with_timers(stream_id, expected_version, events, timers, fence)

    def _check_fence(self, stream_id: str, fence: Fence) -> None:
        lease = self._leases.get((fence.cluster, fence.shard))
        if lease is None or lease.epoch != fence.epoch or lease.owner != fence.member_id:
            actual = None if lease is None else lease.epoch
            raise FencedError(stream_id, fence.shard, fence.epoch, actual)

    def submit_fenced_append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        fence: Fence,
    ) -> asyncio.Future[AppendResult]:
        """Append at once if the shard's lease is still at the fence's epoch; else the future
        fails with :class:`FencedError` and nothing is stored."""
        self._check_open()
        check_append(stream_id, expected_version, events)
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        try:
            self._check_fence(stream_id, fence)
            future.set_result(self._append_now(stream_id, expected_version, events))
        except ActorsourceError as exc:
            future.set_exception(exc)
        return future
