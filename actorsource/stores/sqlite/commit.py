"""Commit strategies, run on the writer's thread: one batch of writes, one transaction.

A batch whose appends all expect known heads is one statement; otherwise rows go in with few
multi-row statements, and a refused one is redone an append at a time to find the one at fault.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final, cast

from ..._errors import (
    ActorsourceError,
    CheckpointConflictError,
    ConcurrencyError,
    StoreError,
)
from ..._records import (
    AppendResult,
    StoredEvent,
)
from .._base import (
    InlineHook,
    decode_json,
    prior_append,
    refused_event_ids,
    retry_start,
    stored_event,
)
from .ops import _Append, _CatchUpInline, _Op, _SaveSnapshot, _TimedAppend, _Transact, _Work
from .schema import (
    _COLUMNS,
    _INSERT_EVENT,
    _PRUNE_SNAPSHOTS,
    _SAVE_CHECKPOINT,
    _SAVE_SNAPSHOT,
    _STREAM_HEAD,
)
from .timer_ops import append_timed, run_work


def _commit_batch(
    conn: sqlite3.Connection,
    batch: list[_Op],
    known_heads: dict[str, int],
    now: datetime,
    now_text: str,
    *,
    inline: dict[str, InlineHook] | None,
) -> tuple[_Results, dict[str, int], int]:
    """Commit a batch in one transaction, on the connection's thread.

    Returns one result per op (an AppendResult, an error for that op alone, or what a
    transaction's work returned), the stream heads the batch learned, and the head position
    after the batch. Raises if the transaction fails as a whole; then nothing of the batch is
    stored.
    """
    if inline is None and not conn.in_transaction:
        done = _all_at_once(conn, batch, known_heads, now, now_text)
        if done is not None:
            return done
    commit = _BatchCommit(conn, now=now, now_text=now_text, inline=inline)
    conn.execute("BEGIN IMMEDIATE")
    try:
        commit.position = (
            conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0] + 1
        )
        commit.run(batch)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return commit.results, commit.heads, commit.position - 1


#: stream ids per head query (SQLite binds at most 32,766 parameters, older builds 999)
_STREAMS_PER_HEAD_QUERY: Final = 500


#: rows per multi-row INSERT (a power of two; at 8 parameters a row it stays under the 999
#: parameters a statement of older SQLite builds allows)
_ROWS_PER_INSERT: Final = 64


#: parameters per events row
_EVENT_COLUMNS: Final = 8


#: the most rows one autocommit statement inserts (a bigger batch goes the general way)
_MAX_ROWS_AT_ONCE: Final = 1024


@functools.cache
def _insert_rows_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
        f"recorded_at) VALUES {values}"
    )


@functools.cache
def _insert_all_sql(rows: int) -> str:
    """One statement inserting up to ``rows`` rows, taking their positions and checking the
    head of every stream it appends to.

    Each row gives its offset (1, 2, ...) in place of a position, and last the head its stream
    must have now (NULL: an earlier row of the statement checks it). A stream at another head
    makes the row's stream id NULL, which the NOT NULL constraint refuses, so the statement
    stores nothing.
    Rows of NULLs pad the parameters up to ``rows``, so that a few statement sizes serve every
    batch. The SELECT reads the table it inserts into, so SQLite runs it to the end before the
    first insert: every check sees the heads from before the statement.
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
        "recorded_at) SELECT (SELECT coalesce(max(position), 0) FROM events) + column1, "
        "CASE WHEN column9 IS NULL OR column9 = (SELECT coalesce(max(version), 0) FROM events "
        "WHERE stream_id = column2) THEN column2 END, "
        "column3, column4, column5, column6, column7, column8 "
        f"FROM (VALUES {values}) WHERE column1 IS NOT NULL"
    )


#: parameters per row of the all-at-once statement: the row, and the head to check
_ALL_AT_ONCE_COLUMNS: Final = 9


#: above this many rows, all-at-once statements come in multiples of it
_ALL_AT_ONCE_STEP: Final = 64


def _statement_rows(rows: int) -> int:
    """The size of the all-at-once statement that takes ``rows`` rows: the next power of two up
    to 64, then the next multiple of 64. A few sizes serve every batch (each stays compiled in
    the connection's statement cache), and a batch binds at most 63 rows of padding: with
    powers of two all the way, a batch of 550 rows bound 474 (4,266 NULL parameters, on the
    writer thread, holding the GIL)."""
    if rows <= _ALL_AT_ONCE_STEP:
        return 1 << (rows - 1).bit_length()
    return -(-rows // _ALL_AT_ONCE_STEP) * _ALL_AT_ONCE_STEP


def _chunks(rows: int) -> list[int]:
    """Split ``rows`` into statement sizes from a small fixed set, so that every statement
    stays in the connection's statement cache: full chunks, then powers of two."""
    sizes = [_ROWS_PER_INSERT] * (rows // _ROWS_PER_INSERT)
    rest = rows % _ROWS_PER_INSERT
    size = _ROWS_PER_INSERT // 2
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size //= 2
    return sizes


def _all_at_once(
    conn: sqlite3.Connection,
    batch: list[_Op],
    known_heads: dict[str, int],
    now: datetime,
    now_text: str,
) -> tuple[_Results, dict[str, int], int] | None:
    """Commit a batch of appends that all expect the heads known (or, for streams the writer
    does not know, any head), with one statement in SQLite's autocommit mode; return what
    :func:`_commit_batch` returns, or None (having stored nothing) if it cannot.

    The statement is the whole transaction: it takes the write lock, checks the head of every
    stream it appends to, gives the positions (``max + 1`` on), inserts, and commits, in one
    release of the GIL and one fsync. A refusal by a constraint (or a check) rolls it back, and
    the batch then goes the general way, which finds out which append failed and why.

    One pass over the batch, and no object for the general way: with one caller asking in
    sequence, every batch is one append, and this is the writer's Python while the caller
    waits.
    """
    max_rows = min(
        conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _ALL_AT_ONCE_COLUMNS,
        _MAX_ROWS_AT_ONCE,
    )
    planned: list[tuple[int, int]] = []  # per append: its new version, its first offset
    after: dict[str, int] = {}  # the heads once the batch is stored
    params: list[Any] = []
    offset = 0
    for op in batch:
        if type(op) is not _Append:
            return None
        version = op.expected_version
        if version is None:
            return None
        stream_id = op.stream_id
        check = None
        head = after.get(stream_id)
        if head is None:
            # the stream's first append in the batch: the statement checks its head, known or
            # not (a known head may be stale, and the version after it may have been archived
            # or deleted by another process, so the unique index would not refuse it)
            head = known_heads.get(stream_id, version)
            check = head
        if head != version:
            return None
        first = offset
        for kind, data, meta, event_id in op.rows:
            offset += 1
            version += 1
            params += (offset, stream_id, version, kind, data, meta, event_id, now_text, check)
        if offset > max_rows:
            return None
        planned.append((version, first))
        after[stream_id] = version
    if not offset:
        return None
    size = _statement_rows(offset)
    if size > max_rows:
        return None
    params += (None,) * ((size - offset) * _ALL_AT_ONCE_COLUMNS)
    try:
        cursor = conn.execute(_insert_all_sql(size), params)
    except sqlite3.IntegrityError:
        return None
    # rows go in as listed: the last one took position base + offset
    base = cast(int, cursor.lastrowid) - offset
    return _Planned(planned, base, now), after, base + offset


class _Planned:
    """The results of an all-at-once batch, made one by one as the loop answers its appends.

    Not a list of them made on the writer's thread: each result would then stay alive until
    the whole batch is answered, one more object per command for the garbage collector (W1:
    young collections 559-576 -> 466-479 a run, full ones 5 -> 4). Iterated once, by _answer.
    """

    __slots__ = ("base", "now", "planned")

    def __init__(self, planned: list[tuple[int, int]], base: int, now: datetime) -> None:
        self.planned, self.base, self.now = planned, base, now

    def __iter__(self) -> Iterator[AppendResult]:
        base, now = self.base + 1, self.now
        for version, first in self.planned:
            yield AppendResult(version, base + first, now)


#: one result per op of a batch: an AppendResult, an error for that op alone, or what a
#: transaction's work returned (all-at-once batches make theirs as they are answered)
_Results = list[Any] | _Planned


class _BatchCommit:
    """The ops of one batch, inside the writer's transaction, on the connection's thread.

    **The fast way.** Consecutive appends that expect their stream's head form a run whose
    rows are inserted by a few multi-row statements, not one statement per append. Each
    statement is one release of the GIL while SQLite works; getting the GIL back can take up
    to a switch interval while the loop thread decides the next commands, so a statement per
    append made the writer wait more than it worked. The run's results are given as if every
    insert succeeds; if a constraint refuses a statement (another process appended, an event
    id is stored already), the run is rolled back to its savepoint and its appends go one at a
    time, which finds out which one failed and why. The heads of the batch's streams are
    queried first, in one query for the batch, inside the transaction.

    Every other op (snapshots, read-model transactions, appends with no expected version or an
    unexpected one, and all appends while inline projections run) goes one at a time.
    """

    __slots__ = (
        "conn",
        "heads",
        "inline",
        "now",
        "now_text",
        "position",
        "results",
        "run_ops",
        "run_params",
        "run_results_from",
        "run_saved_heads",
        "run_start",
    )

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        now: datetime,
        now_text: str,
        inline: dict[str, InlineHook] | None,
    ) -> None:
        self.conn = conn
        #: the next free position (known once the transaction began)
        self.position = 0
        self.now = now
        self.now_text = now_text
        self.inline = inline
        #: one per op so far
        self.results: list[Any] = []
        #: stream heads this batch wrote or checked
        self.heads: dict[str, int] = {}
        self.run_ops: list[_Append] = []
        self.run_params: list[Any] = []
        self.run_start = 0
        self.run_results_from = 0
        #: the heads before the run, to restore if it falls back (None: not in ``heads``)
        self.run_saved_heads: dict[str, int | None] = {}

    def run(self, batch: list[_Op]) -> None:
        """Carry out every op of the batch, in order."""
        # inline projections run per append, each in a savepoint: no fast way for them
        fast = not self.inline
        if fast:
            self._learn_heads(batch)
        conn, results, heads = self.conn, self.results, self.heads
        for op in batch:
            if fast and type(op) is _Append:
                expected = op.expected_version
                if expected is not None and heads.get(op.stream_id) == expected:
                    self._add_to_run(op, expected)
                    continue
            if self.run_ops:
                self._flush_run()
            if isinstance(op, _SaveSnapshot):
                conn.execute(_SAVE_SNAPSHOT, (*op.row, self.now_text))
                if op.keep is not None:
                    conn.execute(_PRUNE_SNAPSHOTS, (op.row[0], op.keep))
                results.append(None)
            elif isinstance(op, _Transact):
                results.append(_transact(conn, op, self.now_text))
            elif isinstance(op, _CatchUpInline):
                results.append(_catch_up_inline(conn, op, self.position, self.now, self.now_text))
            elif isinstance(op, _TimedAppend):
                results.append(append_timed(self, op))
            elif isinstance(op, _Work):
                results.append(run_work(conn, op))
            else:
                results.append(self._append_one(op))
        if self.run_ops:
            self._flush_run()

    def _learn_heads(self, batch: list[_Op]) -> None:
        """Query, in one query, the heads of the streams appended to, inside the transaction.

        Known heads are not trusted here: one may be stale (another process appended), and
        the version after it may have been archived or deleted meanwhile, so that the unique
        index would not refuse an append that expects it.
        """
        streams = list(
            {
                op.stream_id: None
                for op in batch
                if type(op) is _Append and op.expected_version is not None
            }
        )
        heads = self.heads
        for start in range(0, len(streams), _STREAMS_PER_HEAD_QUERY):
            chunk = streams[start : start + _STREAMS_PER_HEAD_QUERY]
            for stream_id in chunk:
                heads[stream_id] = 0  # no row: an empty stream
            marks = ", ".join("?" * len(chunk))
            sql = (
                f"SELECT stream_id, max(version) FROM events WHERE stream_id IN ({marks}) "
                "GROUP BY stream_id"
            )
            heads.update(self.conn.execute(sql, chunk).fetchall())

    def _add_to_run(self, op: _Append, head: int) -> None:
        """Take an append that expects ``head`` into the run, giving its result now."""
        if not self.run_ops:
            self.run_start = self.position
            self.run_results_from = len(self.results)
        self.run_ops.append(op)
        stream_id = op.stream_id
        heads = self.heads
        if stream_id not in self.run_saved_heads:
            self.run_saved_heads[stream_id] = heads.get(stream_id)
        params = self.run_params
        now_text = self.now_text
        position = first = self.position
        version = head
        for kind, data, meta, event_id in op.rows:
            version += 1
            params += (position, stream_id, version, kind, data, meta, event_id, now_text)
            position += 1
        self.position = position
        heads[stream_id] = version
        self.results.append(AppendResult(version, first, self.now))

    def _flush_run(self) -> None:
        """Insert the run's rows, or if a constraint refuses them, its appends one at a time."""
        conn = self.conn
        params = self.run_params
        chunks = _chunks(len(params) // _EVENT_COLUMNS)
        guarded = len(chunks) > 1  # a single statement undoes itself when it fails
        if guarded:
            conn.execute("SAVEPOINT fast_run")
        offset = 0
        try:
            for rows in chunks:
                end = offset + rows * _EVENT_COLUMNS
                conn.execute(_insert_rows_sql(rows), params[offset:end])
                offset = end
        except sqlite3.IntegrityError:
            if guarded:
                conn.execute("ROLLBACK TO fast_run")
                conn.execute("RELEASE fast_run")
            self._one_at_a_time()
        else:
            if guarded:
                conn.execute("RELEASE fast_run")
        self.run_ops, self.run_params, self.run_saved_heads = [], [], {}

    def _one_at_a_time(self) -> None:
        heads = self.heads
        for stream_id, saved in self.run_saved_heads.items():
            if saved is None:
                heads.pop(stream_id, None)
            else:
                heads[stream_id] = saved
        del self.results[self.run_results_from :]
        self.position = self.run_start
        for op in self.run_ops:
            self.results.append(self._append_one(op))

    def _append_one(self, op: _Append) -> AppendResult | BaseException:
        """Append one op's events, checking its expected version, and return its result or
        the error for this append alone (nothing of it stays stored)."""
        conn, heads = self.conn, self.heads
        stream_id, expected = op.stream_id, op.expected_version
        # only a head read in this transaction (see _learn_heads)
        head = heads.get(stream_id)
        if expected is None or head != expected:
            head = conn.execute(_STREAM_HEAD, (stream_id,)).fetchone()[0]
            heads[stream_id] = head
            if expected is not None and head != expected:
                # the stream moved on: maybe by this very append, committed before
                prior = _prior_append(conn, stream_id, expected, op.rows)
                return prior if prior is not None else ConcurrencyError(stream_id, expected, head)
        position, now, now_text, inline = self.position, self.now, self.now_text, self.inline
        rows = [
            (position + i, stream_id, head + i + 1, kind, data, meta, event_id, now_text)
            for i, (kind, data, meta, event_id) in enumerate(op.rows)
        ]
        # one statement undoes itself when it fails; several (or inline projections, which
        # write too) need a savepoint around them
        single = len(rows) == 1 and not inline
        try:
            if single:
                conn.execute(_INSERT_EVENT, rows[0])
            else:
                conn.execute("SAVEPOINT append")
                conn.executemany(_INSERT_EVENT, rows)
        except sqlite3.IntegrityError as exc:
            if not single:
                conn.execute("ROLLBACK TO append")
                conn.execute("RELEASE append")
            actual = conn.execute(_STREAM_HEAD, (stream_id,)).fetchone()[0]
            heads[stream_id] = actual
            prior = _prior_append(conn, stream_id, expected, op.rows)
            if prior is not None:  # this append was committed before: a retry
                return prior
            if actual != head:  # another process appended since we last looked
                return ConcurrencyError(stream_id, head, actual)
            return _append_refused(conn, stream_id, op.rows, exc)
        if inline:
            refused = _run_inline(conn, inline, rows, now, now_text)
            if refused is not None:
                conn.execute("ROLLBACK TO append")
                conn.execute("RELEASE append")
                return refused
        if not single:
            conn.execute("RELEASE append")
        heads[stream_id] = head + len(rows)
        self.position = position + len(rows)
        return AppendResult(head + len(rows), position, now)


def _transact(conn: sqlite3.Connection, op: _Transact, now_text: str) -> Any:
    """Run a transaction op's work and save its checkpoint in a savepoint; return the outcome.

    A failure of the work is the op's result (the savepoint is rolled back), not the batch's.
    """
    if op.expected is not None:
        found = conn.execute("SELECT position FROM checkpoints WHERE name = ?", (op.name,))
        row = found.fetchone()
        actual = int(row[0]) if row is not None else 0
        if actual != op.expected:
            return CheckpointConflictError(op.name, op.expected, actual)
    if op.work is None:
        conn.execute(_SAVE_CHECKPOINT, (op.name, op.position, now_text))
        return None
    conn.execute("SAVEPOINT transact")
    try:
        outcome = op.work(conn)
        conn.execute(_SAVE_CHECKPOINT, (op.name, op.position, now_text))
    except Exception as exc:
        conn.execute("ROLLBACK TO transact")
        conn.execute("RELEASE transact")
        return exc
    conn.execute("RELEASE transact")
    return outcome


def _run_inline(
    conn: sqlite3.Connection,
    inline: dict[str, InlineHook],
    rows: list[tuple[Any, ...]],
    now: datetime,
    now_text: str,
) -> BaseException | None:
    """Feed the inline projections the new rows (and what they missed before them).

    Runs inside the append's savepoint; returns the error of a failing projection (the caller
    rolls the append back) or None.
    """
    for name, hook in inline.items():
        error = _feed_inline(
            conn, name, hook, rows=rows, first_new=rows[0][0], now=now, now_text=now_text
        )
        if error is not None:
            return error
    return None


def _feed_inline(
    conn: sqlite3.Connection,
    name: str,
    hook: InlineHook,
    *,
    rows: list[tuple[Any, ...]],
    first_new: int,
    now: datetime,
    now_text: str,
) -> BaseException | None:
    """Call one inline projection with every event after its checkpoint, then move it.

    ``rows`` are event rows inserted by this transaction (from position ``first_new`` on);
    the events before them are read back from the table.
    """
    found = conn.execute("SELECT position FROM checkpoints WHERE name = ?", (name,)).fetchone()
    done = found[0] if found is not None else 0
    unseen = [
        stored_event(r, datetime.fromisoformat(r[7]))
        for r in conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? AND position < ? ORDER BY position",
            (done, first_new),
        )
    ]
    unseen.extend(
        StoredEvent(
            stream_id, version, position, kind, decode_json(data), decode_json(meta), event_id, now
        )
        for position, stream_id, version, kind, data, meta, event_id, _ in rows
        if position > done
    )
    if not unseen:
        return None
    try:
        hook(conn, unseen)
    except ActorsourceError as exc:
        return exc
    except Exception as exc:
        error = StoreError(f"inline projection {name!r} failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    conn.execute(_SAVE_CHECKPOINT, (name, unseen[-1].position, now_text))
    return None


def _catch_up_inline(
    conn: sqlite3.Connection, op: _CatchUpInline, first_new: int, now: datetime, now_text: str
) -> BaseException | None:
    """Feed a newly added inline projection what it has not seen, in a savepoint."""
    conn.execute("SAVEPOINT catch_up")
    error = _feed_inline(
        conn, op.name, op.hook, rows=[], first_new=first_new, now=now, now_text=now_text
    )
    if error is not None:
        conn.execute("ROLLBACK TO catch_up")
    conn.execute("RELEASE catch_up")
    return error


def _prior_append(
    conn: sqlite3.Connection,
    stream_id: str,
    expected: int | None,
    rows: list[tuple[str, str | bytes, str, str]],
) -> AppendResult | None:
    """The result of an earlier append of exactly these events at these versions, if any (see
    :func:`prior_append`). Only called on the failure paths of an append."""
    event_ids = [row[3] for row in rows]
    found = None
    if expected is None:
        found = conn.execute(
            "SELECT version FROM events WHERE event_id = ? AND stream_id = ?",
            (event_ids[0], stream_id),
        ).fetchone()
    start = retry_start(expected, None if found is None else found[0], len(event_ids))
    if start is None:
        return None
    stored = conn.execute(
        "SELECT event_id, position, recorded_at FROM events "
        "WHERE stream_id = ? AND version > ? AND version <= ? ORDER BY version",
        (stream_id, start, start + len(event_ids)),
    ).fetchall()
    prior = prior_append(event_ids, start, stored)
    if prior is None:
        return None
    return AppendResult(prior[0], prior[1], datetime.fromisoformat(prior[2]))


def _append_refused(
    conn: sqlite3.Connection,
    stream_id: str,
    rows: list[tuple[str, str | bytes, str, str]],
    exc: sqlite3.IntegrityError,
) -> StoreError:
    """Return the error for an append refused by a constraint other than the stream version."""
    msg = refused_event_ids(
        stream_id,
        [row[3] for row in rows],
        lambda i: (
            conn.execute("SELECT 1 FROM events WHERE event_id = ?", (i,)).fetchone() is not None
        ),
    )
    if msg is None:
        msg = f"appending to {stream_id!r} failed: {exc}"
    error = StoreError(f"{msg}; nothing of this append was stored")
    error.__cause__ = exc
    return error
