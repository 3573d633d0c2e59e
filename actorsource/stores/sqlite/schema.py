"""The SQLite file's schema and its opening: identity checks, WAL, creation and upgrade."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Final, Literal

from ..._errors import (
    IncompatibleStoreError,
    StoreError,
)
from ._thread import ConnectionThread

#: marks a SQLite file as an actorsource database (PRAGMA application_id; "ACSO")
APPLICATION_ID: Final = 0x4143534F

#: the schema version this code writes and reads (PRAGMA user_version); version 2 added the
#: checkpoints table; version 3 lets events.data and snapshots.state hold zlib-compressed JSON
#: as a BLOB (no table changes: the mark makes older versions refuse a file they would misread);
#: version 4 the timers table; version 5 the subject keys (crypto-shredding). An older file is
#: upgraded in place when opened, and read as it
#: is when opened read-only
SCHEMA_VERSION: Final = 5

#: the first schema version with the checkpoints table
CHECKPOINTS_SINCE: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    event_id    TEXT    NOT NULL UNIQUE,
    recorded_at TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    PRIMARY KEY (stream_id, version)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
);
"""


def _timers_step() -> list[str]:
    """The statements of the step to version 4: durable timers (idempotent, as _SCHEMA's).

    Due times and claim expiries are microseconds since the Unix epoch, so that they order
    and compare as integers.
    """
    return [
        """CREATE TABLE IF NOT EXISTS timers (
            owner         TEXT    NOT NULL,
            key           TEXT    NOT NULL,
            target        TEXT    NOT NULL,
            command_type  TEXT    NOT NULL,
            data          TEXT    NOT NULL,
            due_at        INTEGER NOT NULL,
            interval      REAL,
            missed        TEXT    NOT NULL,
            claimed_by    TEXT,
            claim_expires INTEGER,
            PRIMARY KEY (owner, key)
        )""",
        "CREATE INDEX IF NOT EXISTS timers_due ON timers (due_at)",
    ]


def _subject_keys_step() -> list[str]:
    """The statements of the step to version 5: subject keys (idempotent, as _SCHEMA's).

    A forgotten subject keeps its row with a NULL key; ``subject_streams`` links a subject to
    the streams holding its sealed data (whose snapshots a forget deletes).
    """
    return [
        """CREATE TABLE IF NOT EXISTS subject_keys (
            subject      TEXT PRIMARY KEY,
            key          BLOB,
            created_at   TEXT NOT NULL,
            forgotten_at TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS subject_streams (
            subject   TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            PRIMARY KEY (subject, stream_id)
        )""",
    ]


_INSERT_EVENT: Final = (
    "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
    "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

_STREAM_HEAD: Final = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"

_STREAM_HEAD_AT: Final = (
    "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ? AND recorded_at <= ?"
)

_SAVE_SNAPSHOT: Final = (
    "INSERT OR REPLACE INTO snapshots (stream_id, version, schema_version, state, recorded_at) "
    "VALUES (?, ?, ?, ?, ?)"
)

#: keep a stream's ``?`` latest snapshots (by version), delete the others
_PRUNE_SNAPSHOTS: Final = (
    "DELETE FROM snapshots WHERE stream_id = ?1 AND version NOT IN "
    "(SELECT version FROM snapshots WHERE stream_id = ?1 ORDER BY version DESC LIMIT ?2)"
)

_COLUMNS: Final = "stream_id, version, position, type, data, metadata, event_id, recorded_at"

_SAVE_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
    "updated_at = excluded.updated_at"
)

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


async def connect(
    path: Path, role: str, *, busy_timeout: float, cache_kib: int, read_only: bool = False
) -> ConnectionThread:
    """Open ``path`` on a thread of its own (``role`` names the thread), with its settings
    (``read_only``: in SQLite's read-only mode)."""
    conn = await ConnectionThread.connect(
        path, busy_timeout=busy_timeout, name=f"actorsource-sqlite-{role}", read_only=read_only
    )
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        # SQLite's default page cache is 2 MiB: the event-id index of a few hundred thousand
        # events outgrows it and every insert then reads index pages back from the OS
        await conn.execute(f"PRAGMA cache_size = {-cache_kib}")
    except BaseException:
        await conn.close()
        raise
    return conn


def open_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """The error for a file SQLite could not open."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        msg = (
            f"{str(path)!r} is not an actorsource database (not a SQLite database: "
            f"{exc}); refusing to touch it"
        )
        return IncompatibleStoreError(msg)
    # anything else (locked, read-only, no space, ...) is a failure to open, not a verdict
    # about what the file is
    msg = f"cannot open {str(path)!r}: {exc}"
    return StoreError(msg)


async def prepare(
    conn: ConnectionThread, path: Path, *, synchronous: str, busy_timeout: float
) -> None:
    """Check that the file is an actorsource database (or empty), switch it to WAL, and create
    or upgrade its schema."""
    # look before changing anything: the journal mode is written into the file's header, so
    # switching a foreign database to WAL would already alter it
    # (one read transaction, so that a schema another opener commits meanwhile is seen
    # whole or not at all)
    await conn.execute("BEGIN")
    try:
        needs_schema = await _check_identity(conn, path)
    finally:
        if conn.in_transaction:
            await conn.execute("COMMIT")
    await _switch_to_wal(conn, path, busy_timeout)
    await conn.execute(f"PRAGMA synchronous = {synchronous}")
    if not needs_schema:
        return
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # again under the write lock: another process may have created the schema meanwhile
        if await _check_identity(conn, path):
            for statement in [*_SCHEMA.split(";"), *_timers_step(), *_subject_keys_step()]:
                if statement.strip():
                    await conn.execute(statement)
            await conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise


async def _switch_to_wal(conn: ConnectionThread, path: Path, busy_timeout: float) -> None:
    # switching takes an exclusive lock, and when openers of a new file race for it SQLite
    # answers "database is locked" at once instead of waiting busy_timeout (it would
    # deadlock); so wait here, up to busy_timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + busy_timeout
    delay = 0.001
    while True:
        try:
            mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or loop.time() >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    if next(iter(mode))[0].lower() != "wal":
        msg = f"cannot switch {str(path)!r} to WAL mode (got {list(mode)})"
        raise StoreError(msg)


async def read_identity(conn: ConnectionThread, path: Path) -> int:
    """Return the schema version of the store in the file, changing nothing; raise if the file
    holds no actorsource store, or one newer than this code reads."""
    await conn.execute("BEGIN")
    try:
        app_id, version = await _identity(conn, path)
    finally:
        if conn.in_transaction:
            await conn.execute("COMMIT")
    if app_id != APPLICATION_ID or version < 1:
        msg = (
            f"{str(path)!r} holds no actorsource store (an empty SQLite database); opened "
            "read-only, it is not created"
        )
        raise IncompatibleStoreError(msg)
    return version


async def _check_identity(conn: ConnectionThread, path: Path) -> bool:
    """Return whether the file needs the schema; raise if it is not ours to touch."""
    app_id, version = await _identity(conn, path)
    return app_id != APPLICATION_ID or version < SCHEMA_VERSION


async def _identity(conn: ConnectionThread, path: Path) -> tuple[int, int]:
    """Return the file's application id and schema version; raise if it is not ours to touch
    (another application's, or newer than this code reads)."""
    app_id = await _scalar(conn, "PRAGMA application_id")
    version = await _scalar(conn, "PRAGMA user_version")
    if app_id not in (0, APPLICATION_ID):
        msg = (
            f"{str(path)!r} is not an actorsource database: it is marked as another "
            f"application's (application_id {app_id:#x}); refusing to touch it"
        )
        raise IncompatibleStoreError(msg)
    if app_id == 0:
        tables = [
            row[0]
            for row in await conn.execute_fetchall(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
            )
        ]
        if tables:
            msg = (
                f"{str(path)!r} is not an actorsource database: it holds tables "
                f"{', '.join(sorted(tables))} and no actorsource mark; refusing to touch it"
            )
            raise IncompatibleStoreError(msg)
    if version > SCHEMA_VERSION:
        msg = (
            f"{str(path)!r} has actorsource schema version {version}, newer "
            f"than this version of actorsource reads ({SCHEMA_VERSION}); upgrade "
            "actorsource"
        )
        raise IncompatibleStoreError(msg)
    return app_id, version


async def _scalar(conn: ConnectionThread, sql: str) -> int:
    rows = list(await conn.execute_fetchall(sql))
    return int(rows[0][0])
