"""A clustered runtime's node: what ``Runtime(store, cluster=...)`` composes (membership,
shard leases, fenced appends, the loop that keeps them, the view ``runtime.cluster``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.abc

from .._codec import Codec
from .._decider import Decider
from .._errors import ClusterError
from .._refs import Mailboxes
from .._routes import Appender, TimedAppender, fenced_appender, fenced_timed_appender
from ..stores._base import ClusterStore, EventStore, MemberRecord, StoreCapabilities
from ._config import Cluster
from ._membership import Membership
from ._placement import Owner
from ._projection_leases import GatedProjections, ProjectionLeases
from ._routing import RoutedMailboxes
from ._shards import LocalActors, ShardManager
from ._transport import Credentials, Peers, Server


class LocalDispatcher(LocalActors, Mailboxes, Protocol):
    """The runtime's dispatcher, as the node sees it: its live actors and its mailboxes."""


logger = logging.getLogger("actorsource.cluster")

#: the least seconds between two rounds woken early (by lookups of owners not yet known)
_MIN_ROUND_GAP = 0.02


def cluster_tables(store: EventStore, capabilities: StoreCapabilities) -> ClusterStore:
    """Return the store's cluster tables, as its capabilities declare them.

    :raises ValueError: if the store has none (SQLite: one machine's file)
    """
    tables = capabilities.cluster
    if tables is None:
        msg = (
            f"{store!r} keeps no cluster tables (its capabilities declare none), so a runtime "
            "on it cannot join a cluster: members share one PostgreSQL database "
            "(PostgresEventStore), or, in one process for tests, one InMemoryEventStore"
        )
        raise ValueError(msg)
    return tables


class ClusterNode:
    """This runtime as a member of a cluster."""

    def __init__(
        self,
        config: Cluster,
        store: EventStore,
        capabilities: StoreCapabilities,
        dispatcher: LocalDispatcher,
        *,
        codec: Codec,
        deciders: Callable[[str], Decider[Any, Any, Any] | None],
    ) -> None:
        if not isinstance(config, Cluster):
            msg = f"cluster must be a Cluster value, got {config!r}"
            raise TypeError(msg)
        self.config = config
        self.tables = tables = cluster_tables(store, capabilities)
        self.membership = Membership(config, tables)
        self._wake_event = asyncio.Event()
        self.shards = ShardManager(config, tables, self.membership, dispatcher, self.wake)
        self._credentials = Credentials(config.name, config.secret_bytes, config.member_id)
        # a peer that paused (its connection open, nothing answered) holds nobody up for long
        self._peers = Peers(
            self._credentials,
            tls=config.tls,
            connect_timeout=config.lease,
            handshake_timeout=config.lease,
        )
        #: what the runtime's refs send through: the local dispatcher, or the shard's owner
        self.routed = RoutedMailboxes(
            dispatcher,
            self.shards,
            self._peers,
            codec,
            deciders,
            route_timeout=config.routed_timeout,
            attempt_timeout=config.lease,
        )
        self._exit = contextlib.AsyncExitStack()
        self._round_lock = asyncio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        #: the leases of the runtime's projections (None until the runtime hands them over)
        self.projections: ProjectionLeases | None = None

    def appender(
        self,
    ) -> Appender:
        """The actors' append: fenced by this member's shard leases."""
        shards = self.shards
        return fenced_appender(self.tables, shards.shard_of, shards.fence_for, shards.on_fenced)

    def timed_appender(
        self,
    ) -> TimedAppender:
        """The actors' append with timer writes: fenced as :meth:`appender`'s appends are."""
        shards = self.shards
        return fenced_timed_appender(
            self.tables, shards.shard_of, shards.fence_for, shards.on_fenced
        )

    def wake(self) -> None:
        """Run a round soon (an owner is wanted, or a lease was lost)."""
        self._wake_event.set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Join: check the shard count, beat, take this member's shards, then keep at it.

        :raises ClusterError: if the cluster recorded another shard count
        """
        config = self.config
        recorded = await self.tables.record_shard_count(config.name, config.shards)
        if recorded != config.shards:
            msg = (
                f"cluster {config.name!r} has {recorded} shards (recorded by its first member), "
                f"but this member was given shards={config.shards}; a cluster's shard count "
                f"is fixed: use shards={recorded}"
            )
            raise ClusterError(msg)
        exit_stack = self._exit
        await exit_stack.__aenter__()
        try:
            await exit_stack.enter_async_context(self._peers)
            server = Server(config.address, self._credentials, self.routed.handle, tls=config.tls)
            await exit_stack.enter_async_context(server)
            exit_stack.callback(self.routed.close)
            self.membership.address = server.address  # the bound port, if 0 was given
            await self.round()
        except BaseException as exc:
            await exit_stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        # made here, not in the task: a stop before the task first runs cancels it too
        self._scope = anyio.CancelScope()
        task_group.start_soon(self._run, name=f"actorsource cluster {config.member_id}")
        logger.info(
            "joined cluster",
            extra={
                "cluster": config.name,
                "member_id": config.member_id,
                "address": self.membership.address,
                "shards": self.shards.owned_shards(),
            },
        )

    def lease_projections(self, projections: GatedProjections) -> None:
        """Run the runtime's durable background projections (and their slices) one member at
        a time, each under a lease of its own renewed with every round."""
        config = self.config
        self.projections = ProjectionLeases(
            projections,
            self.tables,
            cluster=config.name,
            member_id=config.member_id,
            lease=config.lease,
        )

    async def round(self) -> None:
        """One round: heartbeat, renew, hand off, acquire, refresh the view; then the same for
        the projections' leases."""
        async with self._round_lock:
            if self._stopped:
                return
            members = await self.membership.beat()
            await self.shards.rebalance()
            if self.projections is not None:
                await self.projections.tick(members, self.config.now())

    async def _run(self) -> None:
        assert self._scope is not None
        with self._scope:
            interval = self.config.interval
            while True:
                with anyio.move_on_after(interval):
                    await self._wake_event.wait()
                self._wake_event.clear()
                try:
                    await self.round()
                except Exception as exc:  # the store is down: the leases lapse on their own
                    logger.warning(
                        "cluster round failed",
                        extra={"member_id": self.config.member_id, "error": str(exc)},
                    )
                await anyio.sleep(_MIN_ROUND_GAP)

    async def stop(self) -> None:
        """Leave: hand every shard off (admitted commands finish), then remove the
        heartbeat, so that the other members take the shards over at once."""
        if self._scope is not None:
            self._scope.cancel()
        async with self._round_lock:
            self._stopped = True
            try:
                if self.projections is not None:
                    await self.projections.stop()  # released: the others take them over
                await self.shards.hand_off(list(self.shards.owned))
                await self.membership.leave()
            except Exception as exc:  # the leases lapse on their own
                logger.warning(
                    "leaving the cluster failed; its shards move when their leases lapse",
                    extra={"member_id": self.config.member_id, "error": str(exc)},
                )
            finally:
                # stops serving the other members (requests under way finish first)
                await self._exit.aclose()
        logger.info(
            "left cluster", extra={"cluster": self.config.name, "member_id": self.config.member_id}
        )


class ClusterView:
    """What ``runtime.cluster`` shows of this member and the cluster (read-only)."""

    __slots__ = ("_node",)

    def __init__(self, node: ClusterNode) -> None:
        self._node = node

    def __repr__(self) -> str:
        config = self._node.config
        return f"<ClusterView {config.name!r} member={config.member_id!r}>"

    @property
    def name(self) -> str:
        """The cluster's name."""
        return self._node.config.name

    @property
    def member_id(self) -> str:
        """This member's id."""
        return self._node.config.member_id

    @property
    def address(self) -> str:
        """Where this member listens for the others (the bound port, once listening)."""
        return self._node.membership.address

    def members(self) -> list[MemberRecord]:
        """The live members as of the last round, by id (this one among them)."""
        return sorted(self._node.membership.members.values(), key=lambda m: m.member_id)

    def owned_shards(self) -> list[int]:
        """The shards this member owns and accepts commands for."""
        return self._node.shards.owned_shards()

    def shard_of(self, stream_id: str) -> int:
        """The shard of a stream (the same on every member)."""
        return self._node.shards.shard_of(stream_id)

    def owner_of(self, stream_id: str) -> Owner | None:
        """The owner of a stream's shard as this member knows it (None: unknown, or being
        handed off)."""
        shards = self._node.shards
        return shards.owner(shards.shard_of(stream_id))

    async def refresh(self) -> None:
        """Run a round now: heartbeat, renew, hand off, acquire, and look the owners up
        again (the runtime does this every heartbeat on its own)."""
        await self._node.round()
