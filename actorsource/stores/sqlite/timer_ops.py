"""Timer writes on the writer's thread, inside a batch's transaction."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, Protocol

from ..._errors import ConcurrencyError
from ..._records import AppendResult
from .ops import _Append, _TimedAppend, _Work
from .schema import _STREAM_HEAD

_SET_TIMER = (
    "INSERT INTO timers (owner, key, target, command_type, data, due_at, interval, missed, "
    "claimed_by, claim_expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL) "
    "ON CONFLICT (owner, key) DO UPDATE SET target = excluded.target, "
    "command_type = excluded.command_type, data = excluded.data, due_at = excluded.due_at, "
    "interval = excluded.interval, missed = excluded.missed, claimed_by = NULL, "
    "claim_expires = NULL"
)
_DROP_TIMER = "DELETE FROM timers WHERE owner = ? AND key = ?"


class _Commit(Protocol):
    """What a timed append uses of the batch's commit (``commit._BatchCommit``)."""

    conn: sqlite3.Connection
    heads: dict[str, int]
    position: int
    now: datetime

    def _append_one(self, op: _Append) -> AppendResult | BaseException: ...


def append_timed(commit: _Commit, op: _TimedAppend) -> AppendResult | BaseException:
    """Append the op's events (or check its version, with none), then write its timers.

    A refused append writes no timer; a failing timer write fails the batch (raised).
    """
    conn = commit.conn
    if op.rows:
        result = commit._append_one(_Append(op.stream_id, op.expected_version, op.rows, None))
        if isinstance(result, BaseException):
            return result
    else:
        head = conn.execute(_STREAM_HEAD, (op.stream_id,)).fetchone()[0]
        commit.heads[op.stream_id] = head
        if head != op.expected_version:
            return ConcurrencyError(op.stream_id, op.expected_version, head)
        result = AppendResult(head, commit.position, commit.now)
    for change in op.timers:
        if change[0] == "set":
            conn.execute(_SET_TIMER, change[1:])
        else:
            conn.execute(_DROP_TIMER, change[1:])
    return result


def run_work(conn: sqlite3.Connection, op: _Work) -> Any:
    """Run timer bookkeeping in a savepoint; its error is its result (rolled back)."""
    conn.execute("SAVEPOINT timer_work")
    try:
        outcome = op.work(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO timer_work")
        conn.execute("RELEASE timer_work")
        return exc
    conn.execute("RELEASE timer_work")
    return outcome
