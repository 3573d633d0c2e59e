"""Placement: which member owns each shard, and the stable map of stream ids to shards.

The routing layer sees placement only through :class:`Placement`; the owner of a shard is an
:class:`Owner` record carrying the shard lease's epoch (the fencing token).
"""

from __future__ import annotations

from typing import Protocol

import attrs


@attrs.frozen
class Owner:
    """The member that owns a shard, as placement knows it."""

    member_id: str
    #: "host:port"
    address: str
    #: the shard lease's epoch (fencing token)
    epoch: int


class Placement(Protocol):
    """Which member owns each shard: what routing asks before it sends a message."""

    #: this member
    member_id: str

    def shard_of(self, stream_id: str) -> int: ...

    def owner(self, shard: int) -> Owner | None:
        """The shard's owner (None: unknown, or being handed off)."""
        ...

    async def wait_for_owner(self, shard: int, timeout: float) -> Owner:  # noqa: ASYNC109
        """The shard's owner, once there is one.

        :raises TimeoutError: if none took the shard within ``timeout`` seconds
        """
        ...

    def accepting(self, shard: int) -> bool:
        """True iff THIS member owns the shard and is not handing it off."""
        ...

    def invalidate(self, shard: int) -> None:
        """A peer said it does not own the shard: refresh before the retry."""
        ...
