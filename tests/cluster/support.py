"""Cluster test kit: a static placement, members wired over real TCP on 127.0.0.1, a domain,
and a proxy that can cut a connection where a test wants it."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import anyio
import anyio.abc
import attrs

from actorsource import Aggregate, EventStore, InMemoryEventStore, Rejected, Runtime, apply, command
from actorsource._refs import AggregateRef
from actorsource.cluster._placement import Owner
from actorsource.cluster._protocol import ErrorRegistry
from actorsource.cluster._routing import RoutedMailboxes
from actorsource.cluster._transport import Credentials, Peers, Server

SECRET = b"s3cret-of-the-test-cluster"
CLUSTER = "test-cluster"
A = TypeVar("A")

# -- a domain ----------------------------------------------------------------------------------


@attrs.frozen
class Deposit:
    amount: int


@attrs.frozen
class Withdraw:
    amount: int


@attrs.frozen
class Explode:
    reason: str


@attrs.frozen
class Deposited:
    amount: int


@attrs.frozen
class Withdrew:
    amount: int


class InsufficientFunds(Rejected):
    """A refusal of the application's own, registered with the cluster."""

    def __init__(self, balance: int, asked: int) -> None:
        self.balance = balance
        self.asked = asked
        super().__init__(f"insufficient funds: balance {balance}, asked {asked}")


class Overdrawn(Rejected):
    """A refusal of the application's own, not registered."""


class Unregistered(Exception):
    """An application error not registered with the cluster."""


@attrs.define
class Wallet(Aggregate):
    balance: int = 0

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        if cmd.amount <= 0:
            raise Overdrawn(f"deposit must be positive, got {cmd.amount}")
        return Deposited(cmd.amount)

    @command
    def withdraw(self, cmd: Withdraw) -> Withdrew:
        if cmd.amount > self.balance:
            raise InsufficientFunds(self.balance, cmd.amount)
        return Withdrew(cmd.amount)

    @command
    def explode(self, cmd: Explode) -> None:
        if cmd.reason == "value":
            raise ValueError("exploded on purpose")
        raise Unregistered("exploded on purpose")

    @apply
    def deposited(self, event: Deposited) -> None:
        self.balance += event.amount

    @apply
    def withdrew(self, event: Withdrew) -> None:
        self.balance -= event.amount


# -- placement -----------------------------------------------------------------------------------


class Table:
    """The true owner of each shard, shared by every member's view."""

    def __init__(self, shards: int = 8) -> None:
        self.shards = shards
        self.owners: dict[int, Owner] = {}
        self.changed = anyio.Event()

    def own(self, shard: int, owner: Owner | None) -> None:
        if owner is None:
            self.owners.pop(shard, None)
        else:
            self.owners[shard] = owner
        self.changed.set()
        self.changed = anyio.Event()

    def own_all(self, owner: Owner) -> None:
        for shard in range(self.shards):
            self.own(shard, owner)


class StaticPlacement:
    """One member's view of the table: cached until invalidated (a stale view can be set)."""

    def __init__(self, member_id: str, table: Table) -> None:
        self.member_id = member_id
        self.table = table
        #: shards this view believes are owned otherwise than the table says (until invalidated)
        self.stale: dict[int, Owner] = {}
        self.invalidated: list[int] = []
        #: shards this member owns but is handing off
        self.handing_off: set[int] = set()

    def shard_of(self, stream_id: str) -> int:
        return zlib.crc32(stream_id.encode()) % self.table.shards

    def owner(self, shard: int) -> Owner | None:
        if shard in self.stale:
            return self.stale[shard]
        return self.table.owners.get(shard)

    async def wait_for_owner(self, shard: int, timeout: float) -> Owner:  # noqa: ASYNC109
        with anyio.fail_after(timeout):
            while True:
                owner = self.owner(shard)
                if owner is not None:
                    return owner
                await self.table.changed.wait()

    def accepting(self, shard: int) -> bool:
        owner = self.table.owners.get(shard)
        return (
            owner is not None
            and owner.member_id == self.member_id
            and shard not in self.handing_off
        )

    def invalidate(self, shard: int) -> None:
        self.invalidated.append(shard)
        self.stale.pop(shard, None)


# -- members ---------------------------------------------------------------------------------------


@attrs.define
class Member:
    runtime: Runtime
    placement: StaticPlacement
    routed: RoutedMailboxes
    peers: Peers
    server: Server

    @property
    def owner(self) -> Owner:
        return Owner(self.placement.member_id, self.server.address, 1)

    def ref(self, aggregate: type[A], aggregate_id: str) -> AggregateRef[A]:
        local = self.runtime.ref(aggregate, aggregate_id)
        return AggregateRef(self.routed, local.decider, aggregate_id, local.stream_id)


def credentials(member_id: str, *, secret: bytes = SECRET, cluster: str = CLUSTER) -> Credentials:
    return Credentials(cluster, secret, member_id)


@contextlib.asynccontextmanager
async def members(
    count: int,
    *,
    store: EventStore | None = None,
    table: Table | None = None,
    route_timeout: float = 5.0,
    **runtime_options: Any,
) -> AsyncIterator[list[Member]]:
    """``count`` runtimes on one store, each serving on 127.0.0.1 port 0."""
    store = store if store is not None else InMemoryEventStore()
    table = table if table is not None else Table()
    found: list[Member] = []
    async with contextlib.AsyncExitStack() as stack:
        for index in range(count):
            member_id = f"m{index}"
            runtime = await stack.enter_async_context(Runtime(store, **runtime_options))
            runtime.ref(Wallet, "warm-up")  # the aggregates this member serves
            placement = StaticPlacement(member_id, table)
            peers = await stack.enter_async_context(Peers(credentials(member_id)))
            routed = RoutedMailboxes(
                runtime._dispatcher,
                placement,
                peers,
                runtime._codec,
                runtime._deciders.in_category,
                errors=ErrorRegistry([InsufficientFunds]),
                route_timeout=route_timeout,
            )
            stack.callback(routed.close)
            server = await stack.enter_async_context(
                Server("127.0.0.1:0", credentials(member_id), routed.handle)
            )
            found.append(Member(runtime, placement, routed, peers, server))
        yield found


def stream_in_shard(placement: StaticPlacement, shard: int, prefix: str = "w") -> str:
    """An aggregate id of Wallet whose stream falls in ``shard``."""
    for index in range(10_000):
        aggregate_id = f"{prefix}{index}"
        if placement.shard_of(f"Wallet-{aggregate_id}") == shard:
            return aggregate_id
    raise AssertionError(shard)


# -- a proxy ---------------------------------------------------------------------------------------


class Proxy:
    """Forwards TCP between a client and a server; can cut every connection at the next
    server-to-client chunk (a reply lost after the server did the work)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.address = ""
        self.cut_replies = False
        self.replies_cut = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._scopes: set[anyio.CancelScope] = set()

    def cut(self) -> None:
        """Break every connection through the proxy now (it still accepts new ones)."""
        for scope in self._scopes:
            scope.cancel()

    async def __aenter__(self) -> Proxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.address = f"127.0.0.1:{port}"
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._serve, listener)
        return self

    async def _serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        async with listener:
            await listener.serve(self._forward)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        host, _, port = self.target.rpartition(":")
        async with (
            client,
            await anyio.connect_tcp(host, int(port)) as server,
            anyio.create_task_group() as task_group,
        ):
            self._scopes.add(task_group.cancel_scope)

            async def upstream() -> None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    async for chunk in client:
                        await server.send(chunk)
                task_group.cancel_scope.cancel()

            async def downstream() -> None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    handshake_done = 0
                    async for chunk in server:
                        # the first two server frames are the handshake's
                        if self.cut_replies and handshake_done >= 2:
                            self.replies_cut += 1
                            self.cut_replies = False
                            break
                        handshake_done += 1
                        await client.send(chunk)
                task_group.cancel_scope.cancel()

            task_group.start_soon(upstream)
            task_group.start_soon(downstream)
