"""The PostgreSQL writer: one task, a batch a transaction, one statement a batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from ..._errors import StoreError
from ..._records import AppendResult
from .._base import (
    GrowthMeter,
    InlineHook,
    KnownHeads,
    StoreLifecycle,
    compress_json,
    prior_append,
    retry_start,
)
from .cluster import _ClusterStatements, check_fences
from .connection import _Connection
from .plan import _Append, _NeedFacts, _Op, _Plan, _plan, _resolve, _Sent
from .schema import _Statements
from .transactions import InlineRefused, _TransactionStatements, feed_inline

logger = logging.getLogger("actorsource.stores.postgres")

#: JSON (in characters) above which a batch's compression runs on a worker thread, where zlib
#: works without holding the GIL; below (about a millisecond of zlib at most), on the loop,
#: sparing the batch a hand-over to a thread and back
OFF_LOOP_BYTES: Final = 64 * 1024


class PostgresWriter(StoreLifecycle):
    """The write side of :class:`PostgresEventStore`: its queue, its writer task and connection."""

    # set by the store
    max_batch: int
    compress_over: int | None
    #: number of transactions committed by the writer (a batch is one transaction)
    batches_committed: int
    _driver: Any
    _sql: _Statements
    _where: str
    _append_lock: int
    _closing: bool
    read_only: bool
    _heads: KnownHeads
    _wakeup: asyncio.Event
    _writer: _Connection | None
    _writer_task: asyncio.Task[None] | None
    _pending: list[_Op]
    _pending_since: float | None
    _committing_since: float | None
    _inline: dict[str, InlineHook]
    _tx_sql: _TransactionStatements
    _cluster_sql: _ClusterStatements
    _fenced: bool
    growth_meter: GrowthMeter

    async def _connect(self) -> _Connection:
        raise NotImplementedError

    def _enqueue(self, op: _Op) -> None:
        task = self._writer_task
        if task is None or task.done():
            # nobody would ever answer the write
            msg = f"{self!r} cannot write: its writer task has stopped; make a new store"
            if self.read_only:
                msg = f"{self!r} was opened read_only: it cannot write"
            raise StoreError(msg)
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(op)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    batch = self._pending[: self.max_batch]
                    del self._pending[: self.max_batch]
                    self._committing_since = self._pending_since
                    self._pending_since = time.monotonic() if self._pending else None
                    try:
                        await self._commit(batch)
                    finally:
                        self._committing_since = None
                if self._closing and not self._pending:
                    return
        finally:
            # only if the writer was stopped from outside (cancelled): fail what nobody will write
            pending, self._pending = self._pending, []
            for op in pending:
                if not op.future.done():
                    msg = f"{self!r} stopped writing before this write; nothing of it was stored"
                    op.future.set_exception(StoreError(msg))

    async def _commit(self, batch: list[_Op]) -> None:
        sent = _Sent()
        try:
            results, heads, head_position = await self._commit_batch(batch, sent)
        except Exception as exc:
            self._heads.clear()  # what we believed about stream heads may be wrong now
            lost = self._lost_connection(exc)
            if lost:
                self._drop_writer()
            detail = " ".join(str(exc).split())
            if lost and sent.value:
                msg = (
                    f"the connection to PostgreSQL at {self._where} failed while committing "
                    f"{len(batch)} write(s): {type(exc).__name__}: {detail}; they may or may "
                    "not be stored"
                )
            else:
                msg = (
                    f"PostgreSQL at {self._where} failed to commit {len(batch)} write(s): "
                    f"{type(exc).__name__}: {detail}; nothing of them was stored"
                )
            logger.error(
                "batch commit failed",
                extra={"dsn": self._where, "writes": len(batch), "error": detail},
            )
            for op in batch:
                if not op.future.done():
                    # one error object per caller: a shared one would collect every caller's
                    # traceback
                    error = StoreError(msg)
                    error.__cause__ = exc
                    op.future.set_exception(error)
            return
        except BaseException:
            # the writer was cancelled while the batch was with the server
            self._heads.clear()
            self._drop_writer()
            for op in batch:
                if not op.future.done():
                    msg = (
                        f"{self!r} stopped writing while committing this write; it may or may "
                        "not be stored"
                    )
                    op.future.set_exception(StoreError(msg))
            raise
        self._heads.remember(heads)
        for op, result in zip(batch, results, strict=True):
            if op.future.done():  # the caller was cancelled; the write stands regardless
                continue
            if isinstance(result, BaseException):
                op.future.set_exception(result)
            else:
                op.future.set_result(result)
        self._watch.advance(head_position)

    async def _commit_batch(
        self, batch: list[_Op], sent: _Sent
    ) -> tuple[list[Any], dict[str, int], int]:
        """Commit a batch; return each op's outcome, the heads learned, the head position.

        Raises if the batch failed as a whole (then nothing of it is stored, or, if the
        connection failed after the statement went out, the outcome is unknown).
        """
        conn = await self._writer_connection()
        compressed = self.compress_over is not None and await self._compress(batch)
        try:
            plan: _Plan | None = _plan(batch, self._heads, None)
        except _NeedFacts:
            plan = None
        if plan is not None and not self._inline:  # inline projections: in the facts' transaction
            try:
                if self._fenced:
                    first, at = await self._insert_fenced(conn, batch, plan, sent, compressed)
                else:
                    first, at = await self._insert(conn, plan, sent, compressed)
            except Exception as exc:
                if self._lost_connection(exc):
                    raise
                # a stale head, an event id stored before, or a bad append: decide again with
                # the facts read under the lock
                sent.value = False
            else:
                self.batches_committed += 1
                return (*_resolve(plan, first, at), first + len(plan.event_ids) - 1)
        try:
            plan, first, at = await self._commit_with_facts(conn, batch, sent, compressed)
        except InlineRefused as refused:
            if len(batch) == 1:
                return [refused.error], {}, 0
            sent.value = False
        except Exception as exc:
            if self._lost_connection(exc) or len(batch) == 1:
                raise
            sent.value = False
        else:
            return (*_resolve(plan, first, at), first + len(plan.event_ids) - 1)
        # the server refused the batch as a whole: one transaction per append, so that the
        # append it refuses fails alone
        results: list[Any] = []
        heads: dict[str, int] = {}
        head_position = 0
        for op in batch:
            try:
                plan, first, at = await self._commit_with_facts(conn, [op], sent, compressed)
            except InlineRefused as refused:
                sent.value = False
                results.append(refused.error)
                continue
            except Exception as exc:
                if self._lost_connection(exc):
                    raise
                sent.value = False
                detail = " ".join(str(exc).split())
                what = (
                    f"appending to {op.stream_id!r}"
                    if isinstance(op, _Append)
                    else f"saving a snapshot of {op.row[0]!r}"
                )
                error = StoreError(
                    f"{what} failed: {type(exc).__name__}: {detail}; nothing of it was stored"
                )
                error.__cause__ = exc
                results.append(error)
                continue
            found, learned = _resolve(plan, first, at)
            results.extend(found)
            heads.update(learned)
            if plan.event_ids:
                head_position = first + len(plan.event_ids) - 1
        return results, heads, head_position

    async def _insert_fenced(
        self, conn: _Connection, batch: Sequence[_Op], plan: _Plan, sent: _Sent, compressed: bool
    ) -> tuple[int, datetime | None]:
        """The one-statement insert, in a transaction that first checks the batch's fences
        (their leases locked until the commit; the append lock is taken by the insert, as
        without fences). A fence that moved on sends the batch to the facts' path, which
        refuses only its appends."""
        async with conn.transaction(isolation="read_committed"):
            if await check_fences(conn, self._cluster_sql, batch):
                raise _FencesMoved
            return await self._insert(conn, plan, sent, compressed)

    async def _commit_with_facts(
        self, conn: _Connection, batch: Sequence[_Op], sent: _Sent, compressed: bool
    ) -> tuple[_Plan, int, datetime | None]:
        """Read the batch's stream heads and event ids under the lock, then commit the plan."""
        appends = [op for op in batch if isinstance(op, _Append)]
        streams = list(dict.fromkeys(op.stream_id for op in appends))
        ids = [row[5] for op in appends for row in op.rows]
        async with conn.transaction(isolation="read_committed"):
            # the leases before the append lock, as on the one-statement path: a holder of the
            # append lock never waits for a lease row (a renewal waiting for appends that wait
            # for the lock would otherwise close a cycle)
            refused = await check_fences(conn, self._cluster_sql, batch) if self._fenced else None
            await conn.execute(self._sql.lock, self._append_lock)
            facts = await conn.fetch(self._sql.facts, streams, ids)
            heads = {row[1]: int(row[2]) for row in facts if row[0] == 0}
            stored = {row[1] for row in facts if row[0] == 1}
            if refused:
                kept = [op for index, op in enumerate(batch) if index not in refused]
                plan = _plan(kept, heads, stored)
                await self._find_prior_appends(conn, kept, plan)
                outcomes = iter(plan.outcomes)
                plan.outcomes = [
                    refused[index] if index in refused else next(outcomes)
                    for index in range(len(batch))
                ]
            else:
                plan = _plan(batch, heads, stored)
                await self._find_prior_appends(conn, batch, plan)
            if not plan.event_ids and not plan.snapshots:
                return plan, 0, None
            first, at = await self._insert(conn, plan, sent, compressed)
            if self._inline:
                await feed_inline(conn, dict(self._inline), self._tx_sql)
        self.batches_committed += 1
        return plan, first, at

    async def _find_prior_appends(
        self, conn: _Connection, batch: Sequence[_Op], plan: _Plan
    ) -> None:
        """Turn the failures of appends that were committed before (retries) into their result.

        An append refused for its version or its event ids may be the very append committed
        earlier, whose reply was lost: if its events are stored, by id, at the versions it would
        give them, in one commit, it returns that commit's result (an idempotent append). Runs
        under the lock, on the failure path only.
        """
        for index, (op, outcome) in enumerate(zip(batch, plan.outcomes, strict=True)):
            if not isinstance(op, _Append) or not isinstance(outcome, BaseException):
                continue
            event_ids = [row[5] for row in op.rows]
            found = None
            if op.expected_version is None:
                found = await conn.fetchval(self._sql.version_of, event_ids[0], op.stream_id)
            start = retry_start(
                op.expected_version, None if found is None else int(found), len(event_ids)
            )
            if start is None:
                continue
            rows = await conn.fetch(
                self._sql.stored_range, op.stream_id, start, start + len(event_ids)
            )
            prior = prior_append(event_ids, start, [(r[0], int(r[1]), r[2]) for r in rows])
            if prior is not None:
                plan.outcomes[index] = AppendResult(*prior)

    async def _compress(self, batch: list[_Op]) -> bool:
        """Compress the data of the batch's events longer than ``compress_over`` in place
        (their rows then hold the bytes as their data); return whether any was.

        Only appends that ``submit_append`` marked large are looked at; a batch with much to
        compress does it on a worker thread, off the event loop.
        """
        over = self.compress_over
        assert over is not None
        found: list[tuple[list[Any], int, str]] = []  # (rows, index, JSON text)
        for op in batch:
            if type(op) is _Append and op.large:
                for i, row in enumerate(op.rows):
                    text = row[2] if row[2] is not None else row[1]
                    if type(text) is str and len(text) > over:
                        found.append((op.rows, i, text))
        if not found:
            return False
        texts = [text for _, _, text in found]
        if sum([len(t) for t in texts]) > OFF_LOOP_BYTES:
            packed = await asyncio.to_thread(_compress_all, texts)
        else:
            packed = _compress_all(texts)
        for (rows, i, _), data in zip(found, packed, strict=True):
            row = rows[i]
            rows[i] = (row[0], data, None, row[3], row[4], row[5])
        return True

    async def _insert(
        self, conn: _Connection, plan: _Plan, sent: _Sent, compressed: bool = False
    ) -> tuple[int, datetime | None]:
        snapshots = list(plan.snapshots.values())
        data: list[Any] = plan.data
        data_z: list[bytes | None] | None = None
        if compressed:  # the compressed values go to their own column
            data_z = [d if type(d) is bytes else None for d in data]
            data = [None if type(d) is bytes else d for d in data]
        sent.value = True
        row = await conn.fetchrow(
            self._sql.append,
            plan.stream_ids,
            plan.versions,
            plan.types,
            data,
            plan.data_text,
            plan.metadata,
            plan.metadata_text,
            plan.event_ids,
            plan.check_streams,
            plan.check_heads,
            [r[0] for r in snapshots],
            [r[1] for r in snapshots],
            [r[2] for r in snapshots],
            [r[3] for r in snapshots],
            [r[4] for r in snapshots],
            data_z,
            [r[5] for r in snapshots],
        )
        if plan.event_ids:
            size = sum([len(t) for t in plan.data if t is not None])
            size += sum([len(t) for t in plan.data_text if t is not None])
            size += sum([len(t) for t in plan.metadata if t is not None])
            size += sum([len(t) for t in plan.metadata_text if t is not None])
            self.growth_meter.record(len(plan.event_ids), size)
        return int(row[0]), row[1]

    async def _writer_connection(self) -> _Connection:
        conn = self._writer
        if conn is None or conn.is_closed():
            self._writer = conn = await self._connect()
        return conn

    def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None:
            conn.terminate()

    def _lost_connection(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection failed (not that the server refused a
        statement): a statement already sent may then have committed or not."""
        if isinstance(exc, self._driver.PostgresError):
            return str(getattr(exc, "sqlstate", "") or "").startswith(("08", "57P"))
        return not isinstance(exc, StoreError)

    def writer_lag(self) -> float:
        """Return how long (s) the oldest write not yet committed has waited (0: none waits).

        :raises StoreError: if the store is not open or its writer task has stopped
        """
        self._check_open()
        task = self._writer_task
        if task is None or task.done():
            msg = f"{self!r}: its writer task has stopped"
            raise StoreError(msg)
        since = [t for t in (self._pending_since, self._committing_since) if t is not None]
        return time.monotonic() - min(since) if since else 0.0


class _FencesMoved(StoreError):
    """A fence of the batch no longer holds: the batch is planned again with the facts."""


def _compress_all(texts: list[str]) -> list[bytes]:
    return [compress_json(text) for text in texts]
