"""A cluster's tables in PostgreSQL (a part of :class:`PostgresEventStore`): members'
heartbeats, the shard count, shard leases, and the fence check of fenced appends.

A fenced append goes through the writer like any other; the writer checks the fences of a
batch in the batch's transaction (:func:`check_fences`), reading each shard's lease row
``FOR SHARE``: a takeover's ``UPDATE`` of that row waits until the batch commits, and every
batch after it sees the new epoch. The unfenced path is unchanged (no statement more).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ..._errors import FencedError
from ..._records import AppendResult, NewEvent
from .._base import Fence, MemberRecord, ShardLease, T, check_cluster_name
from .connection import _Connection
from .plan import _Append, _check_no_nul, _Op
from .retention import PostgresRetention

#: the limits of a cluster transaction (see ``PostgresCluster._cluster_transaction``)
_BOUNDED = (
    "SELECT set_config('lock_timeout', '500ms', true), "
    "set_config('idle_in_transaction_session_timeout', '1000', true)"
)


class _ClusterStatements:
    """The SQL of a cluster's tables in one schema (a plain identifier, then quoted)."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        self.heartbeat = (
            f"INSERT INTO {s}.cluster_members (cluster, member_id, address, expires_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (cluster, member_id) DO UPDATE SET "
            "address = excluded.address, expires_at = excluded.expires_at"
        )
        self.leave = f"DELETE FROM {s}.cluster_members WHERE cluster = $1 AND member_id = $2"
        self.live = (
            f"SELECT member_id, address, expires_at FROM {s}.cluster_members "
            'WHERE cluster = $1 AND expires_at > $2 ORDER BY member_id COLLATE "C"'
        )
        # an upsert that changes nothing returns the row as it is, also when another member
        # inserted it a moment ago (a plain SELECT would run on a snapshot taken before that)
        self.record_shards = (
            f"INSERT INTO {s}.clusters AS c (name, shards) VALUES ($1, $2) "
            "ON CONFLICT (name) DO UPDATE SET shards = c.shards RETURNING c.shards"
        )
        self.leases = (
            f"SELECT shard, owner, epoch, expires_at FROM {s}.shard_leases "
            "WHERE cluster = $1 ORDER BY shard"
        )
        # a shard never leased is made at epoch 1; a free or expired one taken at epoch + 1.
        # The update waits for the fenced appends reading the row FOR SHARE (see the module
        # docstring); lock_timeout keeps a paused writer from holding the caller up for long.
        self.acquire = (
            f"INSERT INTO {s}.shard_leases AS l (cluster, shard, owner, epoch, expires_at) "
            "SELECT $1, shard, $2, 1, $4 FROM unnest($3::int[]) AS t(shard) "
            "ON CONFLICT (cluster, shard) DO UPDATE SET owner = excluded.owner, "
            "epoch = l.epoch + 1, expires_at = excluded.expires_at "
            "WHERE l.owner IS NULL OR l.expires_at <= $5 "
            "RETURNING shard, owner, epoch, expires_at"
        )
        self.renew = (
            f"UPDATE {s}.shard_leases AS l SET expires_at = $4 "
            "FROM unnest($3::int[], $5::bigint[]) AS t(shard, epoch) "
            "WHERE l.cluster = $1 AND l.owner = $2 AND l.shard = t.shard AND l.epoch = t.epoch "
            "RETURNING l.shard"
        )
        self.release = (
            f"UPDATE {s}.shard_leases AS l SET owner = NULL, expires_at = 0 "
            "FROM unnest($3::int[], $4::bigint[]) AS t(shard, epoch) "
            "WHERE l.cluster = $1 AND l.owner = $2 AND l.shard = t.shard AND l.epoch = t.epoch "
            "RETURNING l.shard"
        )
        # the leases a batch's fences name, locked until the batch commits; a transaction
        # left idle (its writer paused) is ended by the server after the fence's hold
        self.fences = (
            "WITH hold AS (SELECT set_config('idle_in_transaction_session_timeout', $3, true)) "
            f"SELECT l.cluster, l.shard, l.owner, l.epoch FROM {s}.shard_leases l, hold "
            "WHERE (l.cluster, l.shard) IN (SELECT * FROM unnest($1::text[], $2::int[])) "
            "FOR SHARE OF l"
        )


class PostgresCluster(PostgresRetention):
    """The cluster tables of :class:`PostgresEventStore`."""

    # set by the store
    _cluster_sql: _ClusterStatements
    #: whether a fenced append was ever queued (the writer then checks fences in every batch's
    #: transaction; until then, its one-statement path stays as it is)
    _fenced: bool

    async def _cluster_transaction(
        self, work: Callable[[_Connection], Awaitable[T]], doing: str
    ) -> T:
        """Run ``work`` in a transaction that neither waits long for a row another member
        locked, nor keeps its own locks if this process pauses in the middle of it (the server
        ends it): a paused member must not hold up the others' takeovers."""

        async def bounded(conn: _Connection) -> T:
            await conn.execute(_BOUNDED)
            return await work(conn)

        return await self._in_transaction(bounded, doing)

    def _append_op(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> _Append:
        raise NotImplementedError

    def _enqueue(self, op: _Op) -> None:
        raise NotImplementedError

    async def heartbeat(
        self, cluster: str, member_id: str, address: str, expires_at: float
    ) -> None:
        """Record that the member lives (at ``address``) until ``expires_at``."""
        self._check_open()
        for name in (cluster, member_id):
            check_cluster_name(name)
        _check_no_nul("an address", address)

        async def work(conn: _Connection) -> None:
            await conn.execute(self._cluster_sql.heartbeat, cluster, member_id, address, expires_at)

        await self._cluster_transaction(work, "recording a member's heartbeat in")

    async def leave(self, cluster: str, member_id: str) -> None:
        """Remove the member."""
        self._check_open()

        async def work(conn: _Connection) -> None:
            await conn.execute(self._cluster_sql.leave, cluster, member_id)

        await self._cluster_transaction(work, "removing a member from")

    async def live_members(self, cluster: str, now: float) -> list[MemberRecord]:
        """Return the members whose heartbeat has not expired at ``now``, by id."""
        self._check_open()

        async def work(conn: _Connection) -> list[MemberRecord]:
            rows = await conn.fetch(self._cluster_sql.live, cluster, now)
            return [MemberRecord(row[0], row[1], float(row[2])) for row in rows]

        return await self._cluster_transaction(work, "reading the members in")

    async def record_shard_count(self, cluster: str, shards: int) -> int:
        """Record the cluster's shard count if none is recorded; return the recorded one."""
        self._check_open()
        check_cluster_name(cluster)

        async def work(conn: _Connection) -> int:
            return int(await conn.fetchval(self._cluster_sql.record_shards, cluster, shards))

        return await self._cluster_transaction(work, "recording the shard count in")

    async def shard_leases(self, cluster: str) -> list[ShardLease]:
        """Return every shard lease of the cluster, by shard."""
        self._check_open()

        async def work(conn: _Connection) -> list[ShardLease]:
            rows = await conn.fetch(self._cluster_sql.leases, cluster)
            return [ShardLease(row[0], row[1], int(row[2]), float(row[3])) for row in rows]

        return await self._cluster_transaction(work, "reading shard leases in")

    async def acquire_shards(
        self, cluster: str, member_id: str, shards: Sequence[int], now: float, expires_at: float
    ) -> list[ShardLease]:
        """Take each free or expired shard of ``shards`` with its epoch raised by one.

        A shard whose lease row a paused writer keeps locked is not taken this time (the
        server ends that writer's transaction after its fence's hold; a later call takes it).
        """
        self._check_open()
        check_cluster_name(member_id)
        if not shards:
            return []

        async def work(conn: _Connection) -> list[ShardLease]:
            rows = await conn.fetch(
                self._cluster_sql.acquire, cluster, member_id, list(shards), expires_at, now
            )
            return sorted(
                (ShardLease(row[0], row[1], int(row[2]), float(row[3])) for row in rows),
                key=lambda lease: lease.shard,
            )

        try:
            return await self._cluster_transaction(work, "acquiring shards in")
        except Exception as exc:
            if _lock_timeout(exc):
                return []
            raise

    async def renew_shards(
        self, cluster: str, member_id: str, epochs: Mapping[int, int], expires_at: float
    ) -> list[int]:
        """Extend this member's leases still at their epochs; return the shards renewed."""
        return await self._leases_update(
            self._cluster_sql.renew,
            "renewing shard leases in",
            cluster,
            member_id,
            epochs,
            expires_at,
        )

    async def release_shards(
        self, cluster: str, member_id: str, epochs: Mapping[int, int]
    ) -> list[int]:
        """Release this member's leases still at their epochs; return the shards released."""
        return await self._leases_update(
            self._cluster_sql.release, "releasing shard leases in", cluster, member_id, epochs
        )

    async def _leases_update(
        self,
        sql: str,
        doing: str,
        cluster: str,
        member_id: str,
        epochs: Mapping[int, int],
        *extra: float,
    ) -> list[int]:
        self._check_open()
        if not epochs:
            return []
        shards, numbers = list(epochs), list(epochs.values())

        async def work(conn: _Connection) -> list[int]:
            args = (cluster, member_id, shards, *extra, numbers)
            return sorted(int(row[0]) for row in await conn.fetch(sql, *args))

        return await self._cluster_transaction(work, doing)

    def submit_fenced_append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        fence: Fence,
    ) -> asyncio.Future[AppendResult]:
        """Queue an append that commits only if the shard's lease is still at the fence's
        epoch (checked in the writer's transaction); else the future fails with
        :class:`FencedError` and nothing is stored."""
        op = self._append_op(stream_id, expected_version, events)
        op.fence = fence
        self._fenced = True
        self._enqueue(op)
        return op.future


async def check_fences(
    conn: _Connection, sql: _ClusterStatements, batch: Sequence[_Op]
) -> dict[int, FencedError]:
    """Lock the leases the batch's fences name and return, by index in the batch, the
    appends whose fence no longer holds (to fail with :class:`FencedError`, unstored).

    Runs inside the batch's transaction, before its insert.
    """
    fenced = [
        (index, op)
        for index, op in enumerate(batch)
        if type(op) is _Append and op.fence is not None
    ]
    if not fenced:
        return {}
    wanted = {(op.fence.cluster, op.fence.shard) for _, op in fenced if op.fence is not None}
    hold = max(op.fence.hold for _, op in fenced if op.fence is not None)
    rows = await conn.fetch(
        sql.fences,
        [c for c, _ in wanted],
        [s for _, s in wanted],
        str(max(int(hold * 1000), 1)),
    )
    leases = {(row[0], int(row[1])): (row[2], int(row[3])) for row in rows}
    refused: dict[int, FencedError] = {}
    for index, op in fenced:
        fence = op.fence
        assert fence is not None
        lease = leases.get((fence.cluster, fence.shard))
        if lease is None or lease != (fence.member_id, fence.epoch):
            actual = None if lease is None else lease[1]
            refused[index] = FencedError(op.stream_id, fence.shard, fence.epoch, actual)
    return refused


async def check_fence(
    conn: _Connection, sql: _ClusterStatements, stream_id: str, fence: Fence
) -> None:
    """Lock the lease ``fence`` names until the transaction ends, and raise
    :class:`FencedError` if it is no longer at the fence's epoch (run before the append, in
    its transaction)."""
    rows = await conn.fetch(
        sql.fences, [fence.cluster], [fence.shard], str(max(int(fence.hold * 1000), 1))
    )
    lease = (rows[0][2], int(rows[0][3])) if rows else None
    if lease != (fence.member_id, fence.epoch):
        raise FencedError(stream_id, fence.shard, fence.epoch, None if lease is None else lease[1])


def _lock_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is PostgreSQL's lock_timeout (SQLSTATE 55P03)."""
    while exc is not None:
        if getattr(exc, "sqlstate", None) == "55P03":
            return True
        exc = exc.__cause__  # type: ignore[assignment]  # the chain ends in None
    return False
