"""What an activation load runs on the reader's thread: the latest snapshot and the events
after it, for one stream or many in one statement."""

from __future__ import annotations

import functools
import itertools
import sqlite3
from typing import Any, Final

from .._base import (
    decode_json,
)
from .commit import _statement_rows

#: the events after its snapshot that a load reads within its job's one statement: an
#: aggregate's whole tail when snapshots are taken every few dozen events; a longer stream reads
#: the rest page by page, row by row, where SQLite's stepping runs beside the loop's decoding
#: (a whole page of 2,000 rows as JSON was slower, measured: 38-40 ms for a 10,000-event
#: replay against 35-36 ms, and 219-285 ms against 153-167 ms for a read_all of 20,000 events
#: beside a busy runtime)
_EVENTS_PER_LOAD_IN_JOB: Final = 128


def _latest(conn: sqlite3.Connection, stream_id: str, page_size: int) -> tuple[Any, list[Any]]:
    """The latest snapshot row and the first page of event rows after it (reader's thread)."""
    snapshot = conn.execute(
        "SELECT version, schema_version, state, recorded_at FROM snapshots "
        "WHERE stream_id = ? ORDER BY version DESC LIMIT 1",
        (stream_id,),
    ).fetchone()
    after = snapshot[0] if snapshot is not None else 0
    rows = conn.execute(
        "SELECT version, type, data, position FROM events WHERE stream_id = ? AND version > ? "
        "ORDER BY version LIMIT ?",
        (stream_id, after, page_size),
    ).fetchall()
    return snapshot, rows


@functools.cache
def _latest_many_sql(streams: int) -> str:
    """One query for the latest snapshot and first page of events of up to ``streams`` streams,
    all of it in one row of JSON text (see :func:`_latest_many`).

    Per stream: ``[stream_id, [version, schema_version, state, recorded_at] or null,
    [[version, type, data], ...]]``. ``state`` and ``data`` are embedded as stored (they are
    JSON already); a value that is not valid JSON makes the whole text fail to parse (or
    changes its shape, which the caller checks), and the caller then reads stream by stream,
    which says which stream holds it. NULLs pad the stream
    ids up to ``streams``, so that a few statement sizes serve every job.
    """
    wanted = ", ".join(["(?)"] * streams)
    return (
        "SELECT '[' || coalesce(group_concat(item, ','), '') || ']' FROM ("
        "SELECT '[' || json_quote(w.column1) || ',' || coalesce(("
        "SELECT '[' || s.version || ',' || s.schema_version || ',' || s.state || ',' || "
        "json_quote(s.recorded_at) || ']' FROM snapshots AS s WHERE s.stream_id = w.column1 "
        "ORDER BY s.version DESC LIMIT 1), 'null') || ',' || coalesce(("
        "SELECT '[' || group_concat('[' || e.version || ',' || json_quote(e.type) || ',' || "
        "e.data || ']', ',') || ']' FROM (SELECT version, type, data FROM events "
        "WHERE stream_id = w.column1 AND version > coalesce(("
        "SELECT max(version) FROM snapshots WHERE stream_id = w.column1), 0) "
        "ORDER BY version LIMIT ?1) AS e), '[]') || ']' AS item "
        f"FROM (VALUES {wanted}) AS w WHERE w.column1 IS NOT NULL)"
    )


def _latest_many(
    conn: sqlite3.Connection, stream_ids: list[str], page_size: int
) -> dict[str, tuple[Any, list[Any]]] | None:
    """The latest snapshot and the first page of events after it, for many streams in one
    statement (reader's thread); None if that cannot be done (then read stream by stream).

    Why one statement: Python's sqlite3 releases the GIL for every step of a statement, one
    per row, and takes it back after. While the event loop's thread runs Python (a busy
    runtime), each taking back waits for a switch interval: measured here, 2,000 rows fetched
    beside a busy thread took 2.2 s (1 ms alone), and 200 one-row queries 2.1 s; 1,000 cold
    aggregates asked under load, two queries each, waited up to 0.9-2.0 s for their first
    reply. Here SQLite builds the whole answer as one JSON text, so a job of many loads costs
    one step, whatever it reads, and orjson parses it in one call.

    Returns per stream the snapshot as ``[version, schema_version, state, recorded_at]``
    (``state`` decoded) or None, and the events as ``[version, type, data]`` (``data``
    decoded), in version order.
    """
    size = _statement_rows(len(stream_ids))
    params: list[Any] = [page_size, *stream_ids]
    params += [None] * (size - len(stream_ids))
    try:
        (text,) = conn.execute(_latest_many_sql(size), params).fetchone()
        found = decode_json(text)
    except (sqlite3.Error, ValueError):  # orjson's decode error is a ValueError
        # no JSON functions in this SQLite build, or a stored value that is not JSON (the
        # stream-by-stream read reports it against its stream)
        return None
    latest: dict[str, tuple[Any, list[Any]]] = {}
    try:
        for stream_id, snapshot, events in found:
            if snapshot is not None and len(snapshot) != 4:
                return None
            if any(a[0] >= b[0] for a, b in itertools.pairwise(events)):
                events.sort(key=_version_of)  # group_concat's order is SQLite's choice
            latest[stream_id] = (snapshot, events)
    except (TypeError, ValueError, IndexError):
        # a stored value that is not JSON by itself but parsed as part of the whole text
        # (such as "1],[2"), and so changed its shape: read stream by stream, as above
        return None
    if not all(stream_id in latest for stream_id in stream_ids):
        return None
    return latest


def _version_of(event: list[Any]) -> int:
    return int(event[0])
