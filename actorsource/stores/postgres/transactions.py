"""Read models in PostgreSQL transactions: exactly-once batches and inline projections.

Handlers get an ``asyncpg.Connection`` inside a transaction whose ``search_path`` starts with
the store's schema, so that the read model's unqualified tables live beside the events.

- **Exactly-once** (:meth:`PostgresTransactions.commit_with_checkpoint`): a pooled connection,
  one transaction for the work and the checkpoint. The checkpoint's row is locked first (an
  upsert that returns its position), so that two runners of one projection take turns and the
  second finds the checkpoint moved (``expected=``) instead of applying the batch again.
- **Inline** (:meth:`PostgresTransactions.add_inline_projection`): the writer calls
  :meth:`PostgresTransactions._feed_inline` inside each batch's transaction, after the insert,
  under the append lock. Each projection gets every event after its checkpoint (its checkpoint's
  row locked first), read back from the table: appends of other processes included, and the
  same events whoever appends next. A hook that raises rolls the batch back; the writer then
  commits the batch's appends one per transaction, so that only the append the hook refuses
  fails.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast

from ..._errors import ActorsourceError, CheckpointConflictError, StoreError
from .._base import InlineHook, StoreLifecycle, T, TransactionWork, check_checkpoint, stored_event
from .connection import _Connection, _Pool
from .plan import _check_no_nul
from .schema import _COLUMNS


class _TransactionStatements:
    """The SQL of read-model transactions in one schema (a plain identifier, then quoted)."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        # the read model's unqualified names resolve in the store's schema first, then as
        # before (extensions in public stay reachable); for this transaction only, and once
        # however many statements set it
        path = "current_setting('search_path')"
        enter_schema = (
            f"set_config('search_path', CASE WHEN starts_with({path}, '{s}, ') THEN {path} "
            f"ELSE '{s}, ' || {path} END, true)"
        )
        # locks the checkpoint's row (made at 0 if missing: removed again by a rollback),
        # returns its position and enters the schema (RETURNING runs once: one row); a second
        # runner waits here, then finds where the first left the checkpoint
        locked = (
            f"WITH locked AS (INSERT INTO {s}.checkpoints AS c (name, position, updated_at) "
            "VALUES ($1, 0, clock_timestamp()) "
            f"ON CONFLICT (name) DO UPDATE SET name = c.name RETURNING c.position, {enter_schema})"
        )
        self.enter_checkpoint = f"{locked} SELECT position FROM locked"
        # the events an inline projection has not seen, in the same statement
        self.inline_unseen = (
            f"{locked} SELECT {_COLUMNS} FROM {s}.events "
            "WHERE position > (SELECT position FROM locked) ORDER BY position"
        )
        self.save_checkpoint = (
            f"UPDATE {s}.checkpoints SET position = $2, updated_at = clock_timestamp() "
            "WHERE name = $1"
        )
        self.append_lock = "SELECT pg_advisory_xact_lock($1)"


class InlineRefused(StoreError):
    """An inline projection's hook raised: the append that carried the events fails with
    :attr:`error` (and nothing of it is stored)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        #: what the append fails with: the hook's ActorsourceError, else a StoreError naming it
        self.error = error


class _WorkFailed(Exception):
    """The caller's work raised (not the store): raised again as it was, after the rollback."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class PostgresTransactions(StoreLifecycle):
    """The read-model transactions of :class:`PostgresEventStore` (a ``TransactionalStore``)."""

    # set by the store
    _errors: tuple[type[BaseException], ...]
    _pool: _Pool | None
    _tx_sql: _TransactionStatements
    _where: str
    _append_lock: int
    #: inline projections' hooks, run in every batch's transaction by the writer
    _inline: dict[str, InlineHook]

    async def commit_with_checkpoint(
        self, name: str, position: int, work: TransactionWork[T], *, expected: int | None = None
    ) -> T:
        """Run ``work(connection)`` and set checkpoint ``name`` to ``position`` atomically.

        ``work`` gets an ``asyncpg.Connection`` inside the transaction, its ``search_path``
        starting with the store's schema; it may be a plain function or return an awaitable
        (an ``async`` function), awaited inside the transaction. It must not commit or roll
        back. If it raises, its writes are rolled back, the checkpoint is unchanged and the
        error is raised here.

        :raises CheckpointConflictError: if ``expected`` is given and the checkpoint is not
            there (checked under a lock on the checkpoint, in the same transaction; ``work``
            did not run)
        :raises StoreError: if PostgreSQL fails (nothing is committed then, unless the
            connection failed during the commit: the checkpoint says which)
        """
        self._check_open()
        check_checkpoint(name, position)
        _check_no_nul("a checkpoint name", name)
        if expected is not None:
            check_checkpoint(name, expected)
        pool = self._connected_pool()
        failure: BaseException | None = None
        try:
            async with pool.acquire() as conn, conn.transaction():
                actual = int(await conn.fetchval(self._tx_sql.enter_checkpoint, name))
                if expected is not None and actual != expected:
                    raise CheckpointConflictError(name, expected, actual)
                outcome = await _run(work, conn)
                await conn.execute(self._tx_sql.save_checkpoint, name, position)
        except _WorkFailed as failed:
            failure = failed.error
        except self._errors as exc:
            raise self._failed(f"committing checkpoint {name!r} with its read model", exc) from exc
        if failure is not None:
            raise failure  # as the work raised it (outside the handler: no context added)
        return cast(T, outcome)

    async def add_inline_projection(self, name: str, hook: InlineHook) -> None:
        """Call ``hook(connection, events)`` inside every append's transaction.

        The hook runs on the event loop with the writer's ``asyncpg.Connection`` (see
        :meth:`commit_with_checkpoint`; it may be ``async``), under the append lock; it gets
        every event after checkpoint ``name`` through the appended ones, and the checkpoint
        moves with them. If it raises, the append fails with that error and nothing of it is
        stored. When this returns, the hook has seen every event committed before (in one
        transaction holding the append lock: catch a long history up with
        :meth:`commit_with_checkpoint` batches first).

        :raises Exception: what the hook raised on the events it missed (it is not added then)
        """
        self._check_open()
        check_checkpoint(name)
        _check_no_nul("a checkpoint name", name)
        pool = self._connected_pool()
        # added first: the writer's next batch feeds it too; the lock makes the two take turns,
        # and each feeds only what is after the checkpoint it finds
        self._inline[name] = hook
        failure: BaseException | None = None
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(self._tx_sql.append_lock, self._append_lock)
                await feed_inline(conn, {name: hook}, self._tx_sql)
        except InlineRefused as refused:
            failure = refused.error
        except self._errors as exc:
            failure = self._failed(f"catching up inline projection {name!r}", exc)
            failure.__cause__ = exc
        except BaseException:
            self._inline.pop(name, None)
            raise
        if failure is not None:
            self._inline.pop(name, None)
            raise failure

    def remove_inline_projection(self, name: str) -> None:
        """Stop calling the inline projection ``name`` (its checkpoint stays)."""
        self._inline.pop(name, None)

    def _connected_pool(self) -> _Pool:
        pool = self._pool
        if pool is None:
            msg = f"{self!r} is not connected"
            raise StoreError(msg)
        return pool

    def _failed(self, doing: str, exc: BaseException) -> StoreError:
        detail = " ".join(str(exc).split())
        msg = f"{doing} at PostgreSQL {self._where} failed: {type(exc).__name__}: {detail}"
        return StoreError(msg)


async def feed_inline(
    conn: _Connection, hooks: dict[str, InlineHook], sql: _TransactionStatements
) -> None:
    """Feed each inline projection every event after its checkpoint, then move it.

    Runs inside a transaction holding the append lock (the writer's, after its insert).

    :raises InlineRefused: if a hook raised (the caller rolls the transaction back)
    """
    for name, hook in hooks.items():
        rows = await conn.fetch(sql.inline_unseen, name)
        if not rows:
            continue
        events = [stored_event(row, row[7]) for row in rows]
        try:
            await _run(hook, conn, events)
        except _WorkFailed as failed:
            exc = failed.error
            if isinstance(exc, ActorsourceError):
                raise InlineRefused(exc) from exc
            error = StoreError(f"inline projection {name!r} failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            raise InlineRefused(error) from exc
        # the row exists: inline_unseen made it (locked) if it was missing
        await conn.execute(sql.save_checkpoint, name, events[-1].position)


async def _run(work: Callable[..., Any], *args: object) -> Any:
    """Call ``work(*args)`` and await what it returns if it is awaitable; what it raises comes
    out as :class:`_WorkFailed` (so that the store's edge does not take it for its own)."""
    try:
        outcome = work(*args)
        if inspect.isawaitable(outcome):
            outcome = await outcome
    except Exception as exc:
        raise _WorkFailed(exc) from exc
    return outcome
