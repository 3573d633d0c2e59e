"""Membership: this member's heartbeat in the store, and the members still alive."""

from __future__ import annotations

import logging

from ..stores._base import ClusterStore, MemberRecord
from ._config import Cluster

logger = logging.getLogger("actorsource.cluster")


class Membership:
    """This member's heartbeat and its view of the live members (refreshed by :meth:`beat`).

    A member is alive while its last heartbeat is younger than the cluster's lease: one that
    stops beating (killed, paused, cut off) is declared dead when its heartbeat expires.
    """

    def __init__(self, config: Cluster, store: ClusterStore) -> None:
        self.config = config
        self.store = store
        #: where this member listens (the bound address, once the server is listening)
        self.address = config.address
        #: the live members by id, as of the last beat (this member among them)
        self.members: dict[str, MemberRecord] = {}

    async def beat(self) -> dict[str, MemberRecord]:
        """Record this member's heartbeat, then read the live members; return them."""
        config = self.config
        now = config.now()
        await self.store.heartbeat(config.name, config.member_id, self.address, now + config.lease)
        live = await self.store.live_members(config.name, now)
        before = set(self.members)
        self.members = {member.member_id: member for member in live}
        if set(self.members) != before:
            logger.info(
                "cluster members changed",
                extra={
                    "cluster": config.name,
                    "member_id": config.member_id,
                    "members": sorted(self.members),
                },
            )
        return self.members

    async def leave(self) -> None:
        """Remove this member's heartbeat (a clean stop: no one waits for it to expire)."""
        await self.store.leave(self.config.name, self.config.member_id)
        self.members.pop(self.config.member_id, None)

    def address_of(self, member_id: str) -> str | None:
        """Return where a live member listens (None: not a live member)."""
        member = self.members.get(member_id)
        return member.address if member is not None else None
