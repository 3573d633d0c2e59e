"""Shard leases as one member holds them: acquiring what rendezvous hashing gives it,
renewing, handing off (stop accepting, drain, passivate, release), and where the other
shards live (this member's :class:`Placement`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import Protocol

import anyio

from .._errors import FencedError
from ..stores._base import ClusterStore, Fence, ShardLease
from ._config import Cluster
from ._membership import Membership
from ._placement import Owner, rendezvous, shard_of

logger = logging.getLogger("actorsource.cluster")

#: seconds between looks at a handed-off shard's actors still busy with admitted commands
_DRAIN_POLL = 0.005


class LocalActors(Protocol):
    """The live actors of this member (the runtime's dispatcher)."""

    def live_streams(self) -> list[str]: ...

    def passivate_stream(self, stream_id: str) -> bool: ...


class ShardManager:
    """The shards this member owns, and its view of who owns the others."""

    def __init__(
        self,
        config: Cluster,
        store: ClusterStore,
        membership: Membership,
        actors: LocalActors,
        wake: Callable[[], None],
    ) -> None:
        self.config = config
        self.store = store
        self.membership = membership
        self.actors = actors
        self._wake = wake
        #: this member's id
        self.member_id = config.member_id
        #: the shard count the cluster recorded (set when the member joins)
        self.shards = config.shards
        #: shard -> the epoch of this member's lease on it
        self.owned: dict[int, int] = {}
        #: shard -> when this member's lease lapses, by this member's clock
        self._expires: dict[int, float] = {}
        #: shard -> the fence of this member's appends to it
        self._fences: dict[int, Fence] = {}
        #: owned shards being handed off (their admitted commands finish; no new ones come)
        self.handing_off: set[int] = set()
        #: shard -> its owner elsewhere and when its lease lapses (as of the last refresh)
        self._owners: dict[int, tuple[Owner, float]] = {}
        self._refreshed = asyncio.Event()

    # -- Placement ----------------------------------------------------------------------------

    def shard_of(self, stream_id: str) -> int:
        """Return the shard of a stream."""
        return shard_of(stream_id, self.shards)

    def accepting(self, shard: int) -> bool:
        """Whether this member owns the shard under a lease still valid by its clock, and is
        not handing it off."""
        expires = self._expires.get(shard)
        return expires is not None and shard not in self.handing_off and self.config.now() < expires

    def owner(self, shard: int) -> Owner | None:
        """Return the shard's owner (None: unknown, lapsed, or being handed off)."""
        epoch = self.owned.get(shard)
        if epoch is not None:
            if self.accepting(shard):
                return Owner(self.member_id, self.membership.address, epoch)
            return None
        known = self._owners.get(shard)
        if known is None or known[1] <= self.config.now():
            return None
        return known[0]

    async def wait_for_owner(self, shard: int, timeout: float) -> Owner:  # noqa: ASYNC109  # the seam's contract
        """Return the shard's owner once one is known (refreshing the view meanwhile).

        :raises TimeoutError: if none is known within ``timeout`` seconds
        """
        with anyio.fail_after(timeout):
            while True:
                found = self.owner(shard)
                if found is not None:
                    return found
                refreshed = self._refreshed
                self._wake()
                await refreshed.wait()

    def invalidate(self, shard: int) -> None:
        """Forget the shard's owner elsewhere; the next refresh looks it up again."""
        self._owners.pop(shard, None)
        self._wake()

    def fence_for(self, stream_id: str) -> Fence | None:
        """The fence of this member's appends to a stream (None: it holds no lease on its
        shard)."""
        return self._fences.get(shard_of(stream_id, self.shards))

    def owned_shards(self) -> list[int]:
        """The shards this member owns and accepts commands for."""
        return sorted(shard for shard in self.owned if self.accepting(shard))

    # -- one round ----------------------------------------------------------------------------

    async def rebalance(self) -> None:
        """Renew this member's leases, hand off the shards another member should own now,
        acquire the free ones rendezvous hashing gives this member, and refresh the view."""
        config = self.config
        now = config.now()
        if self.owned:
            epochs = dict(self.owned)
            renewed = set(
                await self.store.renew_shards(
                    config.name, self.member_id, epochs, now + config.lease
                )
            )
            for shard, epoch in epochs.items():
                if shard in renewed:
                    if self.owned.get(shard) == epoch:
                        self._expires[shard] = now + config.lease
                else:
                    self.lost(shard, epoch)
        live = list(self.membership.members)
        desired = {s for s in range(self.shards) if rendezvous(s, live) == self.member_id}
        leaving = [s for s in self.owned if s not in desired and s not in self.handing_off]
        if leaving:
            await self.hand_off(leaving)
        wanted = [s for s in sorted(desired) if s not in self.owned]
        if wanted:
            taken = await self.store.acquire_shards(
                config.name, self.member_id, wanted, now, now + config.lease
            )
            for lease in taken:
                self._gained(lease, now)
        self._refresh(await self.store.shard_leases(config.name))

    def _gained(self, lease: ShardLease, now: float) -> None:
        shard = lease.shard
        self.owned[shard] = lease.epoch
        self._expires[shard] = now + self.config.lease
        self._fences[shard] = Fence(
            self.config.name, shard, lease.epoch, self.member_id, hold=self.config.lease
        )
        self._owners.pop(shard, None)
        logger.debug(
            "shard acquired",
            extra={"member_id": self.member_id, "shard": shard, "epoch": lease.epoch},
        )

    def _refresh(self, leases: list[ShardLease]) -> None:
        owners: dict[int, tuple[Owner, float]] = {}
        for lease in leases:
            if lease.owner is None or lease.owner == self.member_id:
                continue
            address = self.membership.address_of(lease.owner)
            if address is not None:
                owners[lease.shard] = (Owner(lease.owner, address, lease.epoch), lease.expires_at)
        self._owners = owners
        refreshed, self._refreshed = self._refreshed, asyncio.Event()
        refreshed.set()

    # -- losing and handing off ------------------------------------------------------------------

    def lost(self, shard: int, epoch: int) -> None:
        """This member's lease on ``shard`` at ``epoch`` moved on (not renewed in time, or an
        append was fenced off): stop accepting, passivate the shard's idle actors (busy ones
        are fenced off at their next append and reload wherever their next command goes)."""
        if self.owned.get(shard) != epoch:
            return  # already known, or a newer lease
        del self.owned[shard]
        self._expires.pop(shard, None)
        self._fences.pop(shard, None)
        self.handing_off.discard(shard)
        logger.warning(
            "shard lease lost",
            extra={"member_id": self.member_id, "shard": shard, "epoch": epoch},
        )
        self._passivate_idle({shard})
        self._wake()

    def on_fenced(self, error: FencedError) -> None:
        """An append was fenced off: the lease it was made under is gone."""
        self.lost(error.shard, error.epoch)

    async def hand_off(
        self, shards: Collection[int], *, drain_timeout: float | None = None
    ) -> None:
        """Hand ``shards`` off: accept no new commands for them, let their actors finish the
        commands already admitted and passivate them, then release the leases (so that the
        new owner may acquire them at once, with the next epoch)."""
        shards = [s for s in shards if s in self.owned]
        if not shards:
            return
        self.handing_off.update(shards)
        wanted = set(shards)
        limit = drain_timeout if drain_timeout is not None else self.config.lease / 2
        with anyio.move_on_after(limit) as scope:
            # polled: a hook on every actor going idle would cost every command, and a
            # hand-off is rare
            while self._passivate_idle(wanted):  # noqa: ASYNC110
                await anyio.sleep(_DRAIN_POLL)
        if scope.cancelled_caught:
            logger.warning(
                "hand-off: actors still busy after the drain timeout; their appends are "
                "fenced off once the lease is released",
                extra={"member_id": self.member_id, "shards": sorted(wanted)},
            )
        epochs = {s: self.owned[s] for s in shards if s in self.owned}
        try:
            await self.store.release_shards(self.config.name, self.member_id, epochs)
        finally:
            for shard, epoch in epochs.items():
                if self.owned.get(shard) == epoch:
                    del self.owned[shard]
                    self._expires.pop(shard, None)
                    self._fences.pop(shard, None)
                self.handing_off.discard(shard)
        logger.info(
            "shards handed off",
            extra={"member_id": self.member_id, "shards": sorted(epochs)},
        )

    def _passivate_idle(self, shards: Collection[int]) -> int:
        """Passivate the idle live actors of ``shards``; return how many stay (busy)."""
        busy = 0
        for stream_id in self.actors.live_streams():
            if shard_of(stream_id, self.shards) in shards and not self.actors.passivate_stream(
                stream_id
            ):
                busy += 1
        return busy
