"""Where an aggregate lives: its shard (a stable hash of its stream id) and the shard's owner
(rendezvous hashing over the live members, held under a lease with an epoch)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

import attrs


def shard_of(stream_id: str, shards: int) -> int:
    """Return the shard of ``stream_id`` among ``shards``: the same in every process and
    Python version (BLAKE2b of its UTF-8, not ``hash()``, which is salted per process)."""
    digest = hashlib.blake2b(stream_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def _weight(member_id: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{member_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(shard: int, members: Iterable[str]) -> str | None:
    """Return the member that owns ``shard`` by rendezvous (highest random weight) hashing:
    the member with the highest hash of (shard, member); None if there is none.

    When a member joins or leaves, only the shards it wins or held move.
    """
    return max(members, key=lambda member: (_weight(member, shard), member), default=None)


@attrs.frozen(slots=True)
class Owner:
    """The member that owns a shard, where it listens, and its lease's epoch."""

    member_id: str
    #: ``"host:port"``
    address: str
    #: the shard lease's epoch (the fencing token of the owner's appends)
    epoch: int


class Placement(Protocol):
    """Where shards live, as a member sees it (what routing needs)."""

    #: this member's id
    member_id: str

    def shard_of(self, stream_id: str) -> int:
        """Return the shard of a stream."""
        ...

    def owner(self, shard: int) -> Owner | None:
        """Return the shard's owner (None: unknown, or being handed off)."""
        ...

    async def wait_for_owner(self, shard: int, timeout: float) -> Owner:  # noqa: ASYNC109  # the seam's contract
        """Return the shard's owner once one is known.

        :raises TimeoutError: if none is known within ``timeout`` seconds
        """
        ...

    def accepting(self, shard: int) -> bool:
        """Whether this member owns the shard (its lease valid) and is not handing it off."""
        ...

    def invalidate(self, shard: int) -> None:
        """Forget the shard's owner (a peer said it is not the owner): look it up again."""
        ...
