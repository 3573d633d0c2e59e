"""The SQLite writer: group commit on its own thread, callback-driven from the loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from ..._errors import (
    StoreError,
)
from .._base import (
    GrowthMeter,
    InlineHook,
    KnownHeads,
    StoreLifecycle,
    compress_json,
    utc_now,
)
from ._thread import ConnectionThread, Job
from .commit import _commit_batch
from .ops import _answer_op, _answer_ops, _Append, _Op, _TimedAppend

logger = logging.getLogger("actorsource.stores.sqlite")


class _Burst:
    """The context :meth:`SQLiteEventStore.burst` returns (one per store, re-entered)."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteWriter) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._bursts += 1

    def __exit__(self, *exc_info: object) -> None:
        store = self._store
        store._bursts -= 1
        # the writer's thread, when busy, takes what is queued itself: no call then
        if not store._bursts and store._queued and not store._busy.locked():
            store._burst_ended()


class SQLiteWriter(StoreLifecycle):
    """The write side of :class:`SQLiteEventStore`: its queue, batches and writer thread."""

    path: Path
    read_only: bool

    def _init_writer(self, max_batch: int, known_heads: int, compress_over: int | None) -> None:
        self.max_batch = max_batch
        #: event data longer than this (in characters of JSON) is stored compressed
        self.compress_over = compress_over
        #: counts what this store commits, for ``storage_growth`` (replace it before use to
        #: measure over another window)
        self.growth_meter = GrowthMeter()
        self._writer: ConnectionThread | None = None
        #: held while the writer's thread owns a batch (taken on the loop to hand one over,
        #: released on the thread when it finds nothing more queued: see _write_on_thread)
        self._busy = threading.Lock()
        #: set whenever the writer has nothing pending or committing (close waits for it)
        self._drained = asyncio.Event()
        self._start_scheduled = False
        #: bursts under way (see burst()): writes wait for the last one to end
        self._bursts = 0
        self._burst = _Burst(self)
        #: writes not yet taken into a batch: appended on the loop, taken (popleft) by whoever
        #: holds _busy, the loop or the writer's thread (both deque calls are atomic)
        self._queued: deque[_Op] = deque()
        #: batches taken (by the holder of _busy) and answered (on the loop): close waits for
        #: the answers, which reach the loop after the thread let go of _busy
        self._batches_taken = 0
        self._batches_answered = 0
        # stream id -> head version, as last written or checked by this store's writer
        self._heads = KnownHeads(known_heads)
        #: number of transactions committed by the writer (a batch is one transaction)
        self.batches_committed = 0
        #: inline projections' hooks, run in every batch's transaction
        self._inline: dict[str, InlineHook] = {}
        # when the oldest pending write was queued, and when the batch in commit was
        self._pending_since: float | None = None
        self._committing_since: float | None = None

    async def _drain_writes(self) -> None:
        """Wait until every write queued so far is committed and answered (or the writer's
        thread stopped); cancelling this does not cancel them: they are not tasks."""
        while (
            self._busy.locked()
            or self._queued
            or self._start_scheduled
            or self._batches_taken != self._batches_answered
        ) and self._writer_alive():
            self._drained.clear()
            await self._drained.wait()

    def _writer_alive(self) -> bool:
        # a flag, not the thread itself: asking it costs a lock per call, too much per append
        conn = self._writer
        return conn is not None and conn.alive

    def _enqueue(self, op: _Op) -> None:
        conn = self._writer  # _writer_alive inlined: once per write
        if conn is None or not conn.alive:
            # nobody would ever answer the write
            msg = f"{self!r} cannot write: its writer thread has stopped; make a new store"
            if self.read_only:
                msg = f"{self!r} was opened read_only: it cannot write"
            raise StoreError(msg)
        if not self._queued:
            self._pending_since = time.monotonic()
        self._queued.append(op)
        # a busy writer's thread takes what is queued when its batch is done
        if not self._busy.locked() and not self._start_scheduled and not self._bursts:
            # on the next loop step, so that every write of a burst (all the appends this
            # step's callbacks make) goes into one transaction
            self._start_scheduled = True
            self._drained.clear()
            asyncio.get_running_loop().call_soon(self._start_batch)

    def burst(self) -> _Burst:
        """A context for a burst of writes: they wait for its end, then go to the writer at
        once if it is idle (not on the next loop step).

        For a caller that knows when its burst is complete: the runtime wraps its draining of
        the ready actors in one, so that a sequential caller waits one loop step less and a
        crowd of actors still shares a batch. Bursts nest.
        """
        return self._burst

    def _burst_ended(self) -> None:
        if self._queued and not self._busy.locked() and self._writer_alive():
            self._start_batch()

    def writer_lag(self) -> float:
        """Return how long (s) the oldest write not yet committed has waited (0: none waits).

        A health check's view of the writer: a lag that keeps growing means it is stuck (a
        lock held by another process, a hung disk).

        :raises StoreError: if the store is not open or its writer thread has stopped
        """
        self._check_open()
        if not self._writer_alive():
            msg = f"{self!r}: its writer thread has stopped"
            raise StoreError(msg)
        since = [t for t in (self._pending_since, self._committing_since) if t is not None]
        return time.monotonic() - min(since) if since else 0.0

    def _start_batch(self) -> None:
        """Hand the queued writes (up to ``max_batch``) to an idle writer's thread as one batch.

        No writer task: the batch goes straight onto the connection's thread queue, and the
        thread calls :meth:`_batch_done` back on the loop when the transaction is over. That
        saves two task switches per batch, a visible share of one sequential append. A busy
        thread needs no start: it takes the next batch itself (see :meth:`_write_on_thread`).
        """
        self._start_scheduled = False
        conn = self._writer
        if conn is None or not self._queued:
            if not self._busy.locked():
                self._drained.set()
            return
        if not self._busy.acquire(blocking=False):
            return  # the thread is busy: it takes what is queued when its batch is done
        batch = self._take()
        self._drained.clear()
        work = functools.partial(
            self._write_on_thread, conn.connection, conn.jobs, asyncio.get_running_loop(), batch
        )
        # one hop to the connection's thread (see the module docstring), no future or task
        conn.submit(work)

    def _take(self) -> list[_Op]:
        """Take up to ``max_batch`` queued writes (only the holder of ``_busy`` calls this)."""
        queued = self._queued
        # the loop only appends meanwhile, so this many are there to take
        batch = [queued.popleft() for _ in range(min(len(queued), self.max_batch))]
        if batch:
            self._batches_taken += 1
        self._committing_since = self._pending_since
        self._pending_since = time.monotonic() if queued else None
        return batch

    def _write_on_thread(
        self,
        conn: sqlite3.Connection,
        tx: SimpleQueue[Job],
        loop: asyncio.AbstractEventLoop,
        batch: list[_Op],
    ) -> None:
        """Commit batches on the writer's thread, while writes are queued; hold ``_busy``.

        When a batch is done, the thread takes the next one itself (the writes queued while it
        committed) before it hands the outcome to the loop, and lets go of ``_busy`` only when
        nothing is queued (or another call waits for the connection's thread). Why: a batch
        handed over by the loop waits for the GIL before it can start, since the thread wakes
        while the loop runs Python (up to a switch interval, a large share of a batch's cycle
        under load); at the end of its commit the thread holds the GIL anyway. Stream heads are
        remembered here, before the next batch relies on them.
        """
        while True:
            now = utc_now()
            # after the take: a projection's catch-up in this batch has its hook here
            inline = dict(self._inline) if self._inline else None
            if self.compress_over is not None:
                _compress_rows(batch, self.compress_over)
            outcome: Any
            try:
                outcome = _commit_batch(
                    conn, batch, self._heads, now, now.isoformat(), inline=inline
                )
                self._heads.remember(outcome[1])
                _count_growth(self.growth_meter, batch, outcome[0])
            except BaseException as exc:  # reported on the loop, where callers wait
                outcome = exc
                self._heads.clear()  # what we believed about stream heads may be wrong now
            following: list[_Op] = []
            if tx.empty():  # nothing else waits for the connection's thread
                following = self._take()
                if not following:
                    self._committing_since = None
                    self._busy.release()
                    # a write queued after the take, while the loop still saw this thread
                    # busy (so it started nothing): take it, unless the loop already has
                    if self._queued and self._busy.acquire(blocking=False):
                        following = self._take()
                        if not following:
                            self._busy.release()
            else:
                self._committing_since = None
                self._busy.release()
            try:
                loop.call_soon_threadsafe(self._batch_done, batch, outcome)
            except RuntimeError:  # a closed loop: nobody waits any more
                if following:
                    self._busy.release()
                return
            if not following:
                return
            batch = following

    def _batch_done(self, batch: list[_Op], outcome: Any) -> None:
        """Answer a batch's writers (on the loop), then start the next batch with what they
        and the others wrote meanwhile, unless the writer's thread already has."""
        self._batches_answered += 1
        self._bursts += 1  # the writes the answers make are started below
        try:
            self._answer(batch, outcome)
        finally:
            self._bursts -= 1
            if self._busy.locked():
                pass  # the thread commits the next batch and calls back again
            elif self._queued and self._writer_alive():
                self._start_batch()
            else:
                self._drained.set()

    def _answer(self, batch: list[_Op], outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            exc = outcome
            logger.error(
                "batch commit failed",
                extra={"path": str(self.path), "writes": len(batch), "error": str(exc)},
            )
            msg = (
                f"SQLite failed to commit {len(batch)} write(s) to {str(self.path)!r}: {exc}; "
                "nothing of them was stored"
            )
            for op in batch:
                # one error object per caller: a shared one would collect every caller's
                # traceback
                error = StoreError(msg)
                error.__cause__ = exc
                _answer_op(op, error)
            return
        results, _, head_position = outcome
        self.batches_committed += 1
        _answer_ops(batch, results)
        self._watch.advance(head_position)

    def _fail_pending(self, reason: str) -> None:
        pending = list(self._queued)
        self._queued.clear()
        for op in pending:
            _answer_op(op, StoreError(f"{self!r} {reason}; nothing of it was stored"))


def _compress_rows(batch: list[_Op], over: int) -> None:
    """Compress the data of the batch's events longer than ``over`` (on the writer's thread,
    where zlib works without holding the GIL): a len() per event, on text already encoded."""
    for op in batch:
        if type(op) is _Append or type(op) is _TimedAppend:
            rows = op.rows
            for i, row in enumerate(rows):
                data = row[1]
                if len(data) > over and type(data) is str:
                    rows[i] = (row[0], compress_json(data), row[2], row[3])


def _count_growth(meter: GrowthMeter, batch: list[_Op], results: Any) -> None:
    """Count the events (and their stored bytes) of the appends a committed batch stored.

    Comprehensions, not a loop: this runs for every batch, holding the GIL the loop needs.
    """
    if isinstance(results, list):
        ops: list[Any] = [
            op
            for op, result in zip(batch, results, strict=True)
            if (type(op) is _Append or type(op) is _TimedAppend)
            and not isinstance(result, BaseException)
        ]
    else:  # an all-at-once batch: only appends, all stored
        ops = batch
    rows = [row for op in ops for row in op.rows]
    if rows:
        meter.record(len(rows), sum([len(row[1]) + len(row[2]) for row in rows]))
