"""What a store keeps for a cluster of runtimes: members' heartbeats, the shard count, shard
leases with epochs (fencing tokens), and appends fenced by a lease."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs

from ..._records import AppendResult, NewEvent
from ..._timers import TimerChange


@attrs.frozen(slots=True)
class MemberRecord:
    """A member of a cluster as its last heartbeat left it."""

    #: the member's id (unique while it lives)
    member_id: str
    #: where the member listens for its peers (``"host:port"``)
    address: str
    #: when the member is declared dead unless it beats again (seconds since the Unix epoch)
    expires_at: float


@attrs.frozen(slots=True)
class ShardLease:
    """A shard's lease: who owns it, under which epoch, until when."""

    shard: int
    #: the owning member's id (None: released, free to acquire)
    owner: str | None
    #: raised by one at every acquisition: the fencing token of the owner's appends
    epoch: int
    #: when the lease lapses unless renewed (seconds since the Unix epoch)
    expires_at: float


@attrs.frozen(slots=True)
class Fence:
    """What a fenced append must still hold when it commits: the shard's lease at ``epoch``."""

    cluster: str
    shard: int
    epoch: int
    member_id: str
    #: the most seconds the append's transaction may wait with the shard's lease locked
    #: (a paused writer cannot hold up a takeover longer than this)
    hold: float = 10.0


class ClusterStore(Protocol):
    """A store's cluster tables (declared in ``StoreCapabilities.cluster``).

    Times are seconds since the Unix epoch, given by the callers (the members' clocks, which
    must agree to well within a lease). Every method is one transaction.
    """

    async def heartbeat(
        self, cluster: str, member_id: str, address: str, expires_at: float
    ) -> None:
        """Record that the member lives (at ``address``) until ``expires_at``."""
        ...

    async def leave(self, cluster: str, member_id: str) -> None:
        """Remove the member (it stops cleanly; its leases are released separately)."""
        ...

    async def live_members(self, cluster: str, now: float) -> list[MemberRecord]:
        """Return the members whose heartbeat has not expired at ``now``, by id."""
        ...

    async def record_shard_count(self, cluster: str, shards: int) -> int:
        """Record the cluster's shard count if none is recorded; return the recorded one."""
        ...

    async def shard_leases(self, cluster: str) -> list[ShardLease]:
        """Return every shard lease of the cluster (shards never acquired have none), by
        shard."""
        ...

    async def acquire_shards(
        self, cluster: str, member_id: str, shards: Sequence[int], now: float, expires_at: float
    ) -> list[ShardLease]:
        """Take each of ``shards`` that is free (never leased, released, or its lease expired
        at ``now``), with its epoch raised by one, until ``expires_at``; return the leases
        taken (a shard held by a live lease, even this member's, is left as it is)."""
        ...

    async def renew_shards(
        self, cluster: str, member_id: str, epochs: Mapping[int, int], expires_at: float
    ) -> list[int]:
        """Extend this member's leases (shard -> epoch) to ``expires_at``; return the shards
        renewed (one whose epoch moved on, or that was released, is not)."""
        ...

    async def release_shards(
        self, cluster: str, member_id: str, epochs: Mapping[int, int]
    ) -> list[int]:
        """Release this member's leases (shard -> epoch), so that another member may take
        them at once; return the shards released."""
        ...

    async def append_fenced_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
        fence: Fence,
    ) -> AppendResult:
        """Append events and write timers in one transaction, as ``append_with_timers`` does,
        if the shard's lease is still at the fence's epoch when they commit (checked in that
        transaction).

        :raises FencedError: if the epoch moved on (nothing stored, no timer written)
        """
        ...

    def submit_fenced_append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        fence: Fence,
    ) -> asyncio.Future[AppendResult]:
        """Append as ``submit_append`` does, if the shard's lease is still at the fence's
        epoch when the append commits (checked in the same transaction as the events).

        The future fails with :class:`FencedError` (nothing stored) if the epoch moved on.
        """
        ...


def check_cluster_name(name: object) -> str:
    """Return ``name`` if it names a cluster or a member (a non-empty str, no NUL, at most
    200 characters).

    :raises ValueError: naming what was wrong
    """
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 200:
        msg = (
            "a cluster or member name is a non-empty str of at most 200 characters without "
            f"NUL, got {name!r}"
        )
        raise ValueError(msg)
    return name
