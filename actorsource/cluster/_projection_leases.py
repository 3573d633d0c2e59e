"""Projections in a cluster: each background projection, and each slice of a sliced one, runs
on one member at a time, under a lease in the store.

The leases reuse the store's shard leases (:class:`~actorsource.stores._base.ClusterStore`):
one lease namespace per projection, ``CLUSTER/projection/NAME``, whose shards are the
projection's slices (one shard, 0, for a projection not sliced) and whose recorded shard count
is its slice count, so that members that disagree on it are refused. Each (projection, slice)
goes to the live member that rendezvous hashing picks; that member takes the lease when it is
free (released, or expired), renews it with every heartbeat, and runs the projection or slice
while it holds it; it hands it off (stops it, then releases the lease) when the pick moves to
another member or it stops cleanly. A member that dies is taken over once its lease expires;
the next holder resumes from the checkpoint.

What the hand-off promises is what the delivery mode promises: an exactly-once projection
commits each batch only if its checkpoint is where the batch began, so even two members
running one slice for a while (one paused past its lease) apply no event twice; an
at-least-once one may handle the batch in progress at the hand-off again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from .._errors import ClusterError
from .._hosted import GatedProjection
from ..stores._base import ClusterStore

logger = logging.getLogger("actorsource.cluster.projections")


class GatedProjections(Protocol):
    """What the leases drive: a runtime's gated projections (its projection host)."""

    def gated_entries(self) -> tuple[GatedProjection, ...]:
        """The projections and slices a gate holds."""
        ...

    async def open_gate(self, name: str) -> None:
        """Run the projection or slice ``name`` (from its checkpoint)."""
        ...

    async def close_gate(self, name: str) -> None:
        """Stop the projection or slice ``name`` and wait until it stopped."""
        ...


def lease_namespace(cluster: str, projection: str) -> str:
    """The lease namespace of a projection's slices in the store's shard leases."""
    return f"{cluster}/projection/{projection}"


def _weight(namespace: str, index: int, member_id: str) -> int:
    key = f"{namespace}\x00{index}\x00{member_id}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def pick_member(namespace: str, index: int, members: Iterable[str]) -> str | None:
    """Return the member that should run slice ``index`` of a projection: rendezvous (highest
    random weight) hashing of (namespace, slice, member), so that a member joining or leaving
    moves only the slices it wins or held; None if there is no member."""
    return max(members, key=lambda m: (_weight(namespace, index, m), m), default=None)


class _Held:
    """A lease this member holds: its epoch and until when (as this member last renewed it)."""

    __slots__ = ("epoch", "expires_at")

    def __init__(self, epoch: int, expires_at: float) -> None:
        self.epoch = epoch
        self.expires_at = expires_at


class ProjectionLeases:
    """Leases one member's share of a cluster's projections and slices, and runs just those.

    The member calls :meth:`tick` with every heartbeat (the live members and the time now, as
    its clock tells) and :meth:`stop` when it stops cleanly.
    """

    def __init__(
        self,
        projections: GatedProjections,
        store: ClusterStore,
        *,
        cluster: str,
        member_id: str,
        lease: float,
    ) -> None:
        """
        :param projections: the member's gated projections (they run only while leased)
        :param store: the store's cluster tables
        :param cluster: the cluster's name
        :param member_id: this member's id
        :param lease: seconds a lease lasts unless renewed (renew well within it)
        """
        if not lease > 0:
            msg = f"lease must be > 0 seconds, got {lease!r}"
            raise ValueError(msg)
        self._projections = projections
        self._store = store
        self.cluster = cluster
        self.member_id = member_id
        self.lease = lease
        #: namespace -> slice index -> the lease held
        self._held: dict[str, dict[int, _Held]] = {}
        #: namespaces whose slice count the store agreed to
        self._counted: set[str] = set()
        #: projection -> why this member may not run it (its slice count disagrees)
        self._refused: dict[str, str] = {}

    def running(self) -> dict[str, int]:
        """The projections and slices this member holds a lease of (it runs them), by the name
        each runs under, with the lease's epoch."""
        found: dict[str, int] = {}
        for entry in self._projections.gated_entries():
            held = self._held.get(lease_namespace(self.cluster, entry.projection), {})
            lease = held.get(_index(entry))
            if lease is not None:
                found[entry.name] = lease.epoch
        return found

    async def tick(self, members: Iterable[str], now: float) -> None:
        """Renew this member's leases, hand off what should run elsewhere, take what is free
        and should run here.

        :param members: the ids of the live members (this one among them while it lives)
        :param now: the time now (seconds since the Unix epoch, as the heartbeats use)
        :raises ClusterError: if this member's slice count of a projection differs from the
            one the cluster recorded (it does not run that projection; raised once)
        """
        live = sorted(set(members))
        groups: dict[str, list[GatedProjection]] = {}
        for entry in self._projections.gated_entries():
            groups.setdefault(entry.projection, []).append(entry)
        # first, with no store call that could fail before it: stop what may be another's now
        for projection, entries in groups.items():
            await self._stop_expired(lease_namespace(self.cluster, projection), entries, now)
        refused: list[str] = []
        for projection, entries in groups.items():
            if projection in self._refused:
                continue
            namespace = lease_namespace(self.cluster, projection)
            refusal = await self._count(namespace, projection, entries)
            if refusal is not None:
                refused.append(refusal)
                continue
            await self._tick(namespace, entries, live, now)
        if refused:
            raise ClusterError("; ".join(refused))

    async def _count(
        self, namespace: str, projection: str, entries: Sequence[GatedProjection]
    ) -> str | None:
        """Record the projection's slice count, or say why this member may not run it."""
        if namespace in self._counted:
            return None
        first = entries[0].slice
        count = 1 if first is None else first.count
        recorded = await self._store.record_shard_count(namespace, count)
        if recorded == count:
            self._counted.add(namespace)
            return None
        msg = (
            f"projection {projection!r} is split into {count} slice(s) on member "
            f"{self.member_id!r}, but cluster {self.cluster!r} runs it in {recorded}: this "
            f"member does not run it. Give every member the same slices= (to change the "
            f"count, rename the projection: its slices start again from the beginning)"
        )
        self._refused[projection] = msg
        logger.error(
            "projection slice count differs from the cluster's; not running it",
            extra={"projection": projection, "slices": count, "recorded": recorded},
        )
        return msg

    async def _tick(
        self, namespace: str, entries: Sequence[GatedProjection], live: list[str], now: float
    ) -> None:
        by_index = {_index(entry): entry for entry in entries}
        held = self._held.setdefault(namespace, {})
        if held:
            epochs = {index: lease.epoch for index, lease in held.items()}
            expires_at = now + self.lease
            renewed = set(
                await self._store.renew_shards(namespace, self.member_id, epochs, expires_at)
            )
            for index in list(held):
                if index in renewed:
                    held[index].expires_at = expires_at
                    continue
                await self._projections.close_gate(by_index[index].name)
                del held[index]
                self._log("projection lease lost to another member; stopped", namespace, index)
        mine = self.member_id in live
        wanted = {i for i in by_index if mine and pick_member(namespace, i, live) == self.member_id}
        leaving = {i: held[i].epoch for i in held if i not in wanted}
        if leaving:
            # stopped first, so that its last checkpoint save comes before the next holder's load
            for index in leaving:
                await self._projections.close_gate(by_index[index].name)
                del held[index]
            await self._store.release_shards(namespace, self.member_id, leaving)
            for index in leaving:
                self._log("projection handed off", namespace, index)
        missing = sorted(wanted - held.keys())
        if missing:
            expires_at = now + self.lease
            taken = await self._store.acquire_shards(
                namespace, self.member_id, missing, now, expires_at
            )
            for lease in taken:
                held[lease.shard] = _Held(lease.epoch, expires_at)
                await self._projections.open_gate(by_index[lease.shard].name)
                self._log("projection leased here; running", namespace, lease.shard, lease.epoch)

    async def _stop_expired(
        self, namespace: str, entries: Sequence[GatedProjection], now: float
    ) -> None:
        """Stop the slices whose lease this member could not renew in time (by its clock):
        they may be another member's now."""
        held = self._held.get(namespace)
        if not held:
            return
        by_index = {_index(entry): entry for entry in entries}
        for index in [i for i, lease in held.items() if lease.expires_at <= now]:
            await self._projections.close_gate(by_index[index].name)
            del held[index]
            self._log("projection lease expired here; stopped", namespace, index)

    async def stop(self) -> None:
        """Stop every projection and slice this member runs and release their leases, so
        that the next members take them over at once (a clean stop)."""
        names = {self._key_of(entry): entry.name for entry in self._projections.gated_entries()}
        for namespace, held in self._held.items():
            if not held:
                continue
            epochs = {index: lease.epoch for index, lease in held.items()}
            for index in epochs:
                await self._projections.close_gate(names[namespace, index])
            held.clear()
            await self._store.release_shards(namespace, self.member_id, epochs)
            for index in epochs:
                self._log("projection released on stop", namespace, index)

    def _log(self, message: str, namespace: str, index: int, epoch: int | None = None) -> None:
        extra: dict[str, object] = {
            "member_id": self.member_id,
            "lease_namespace": namespace,
            "slice": index,
        }
        if epoch is not None:
            extra["epoch"] = epoch
        logger.info(message, extra=extra)

    def _key_of(self, entry: GatedProjection) -> tuple[str, int]:
        return lease_namespace(self.cluster, entry.projection), _index(entry)


def _index(entry: GatedProjection) -> int:
    return 0 if entry.slice is None else entry.slice.index
